//! Failures under load: retry on the next backend, passive health, all backends down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_backend_under_load_fails_no_request_and_it_rejoins_after_restart() {
    let bs = backends(&["a", "b", "c"]).await;
    let p = proxy(&resilient(&bs, "")).await;
    let addr = p.listen[0];
    let c = client();
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (c, done, failed) = (c.clone(), done.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            for _ in 0..125 {
                let a = get(&c, addr, "load.test", "/").await;
                if a.status != StatusCode::OK {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let d = done.clone();
    eventually("500 requests are done", || {
        let d = d.clone();
        async move { d.load(Ordering::SeqCst) >= 500 }
    })
    .await;
    bs[1].kill();
    let killed_at = bs[1].hits();
    for w in workers {
        tokio::time::timeout(DEADLINE, w).await.unwrap().unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 2000);
    assert_eq!(failed.load(Ordering::SeqCst), 0, "failed responses");
    assert_eq!(bs[1].hits(), killed_at, "a killed backend answered");
    assert!(bs[0].hits() + bs[2].hits() >= 2000 - killed_at);

    eventually("the killed backend is marked down", || async {
        !available(&p, "app", bs[1].addr)
    })
    .await;
    bs[1].restart().await;
    eventually("the restarted backend is marked up", || async {
        available(&p, "app", bs[1].addr)
    })
    .await;
    let before = bs[1].hits();
    tally(&c, addr, "load.test", 6).await;
    assert!(
        bs[1].hits() > before,
        "the restarted backend takes traffic again"
    );
}

#[tokio::test]
async fn all_backends_down_answers_503_quickly_then_recovers() {
    let bs = backends(&["a", "b"]).await;
    let p = proxy(&resilient(&bs, "")).await;
    let c = client();
    let addr = p.listen[0];
    assert_eq!(get(&c, addr, "x", "/").await.status, StatusCode::OK);
    for b in &bs {
        b.kill();
    }
    // The first requests may still try the dead backends (502); once both are marked down,
    // the proxy answers 503 without dialling anything.
    eventually("the proxy answers 503", || async {
        get(&c, addr, "x", "/").await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let t = Instant::now();
    let a = get(&c, addr, "x", "/").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.body.starts_with("503 "), "{}", a.body);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "503 took {:?}",
        t.elapsed()
    );
    for b in &bs {
        b.restart().await;
    }
    eventually("the proxy serves again", || async {
        get(&c, addr, "x", "/").await.status == StatusCode::OK
    })
    .await;
}
