//! Reloading a config and shutting down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::StatusCode;
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_reload_changes_routing_without_failing_requests_in_flight() {
    let a = backends(&["a"]).await;
    let b = backends(&["b"]).await;
    let p = proxy(&two_upstreams(&a, &b, "a")).await;
    let addr = p.listen[0];
    let c = client();
    assert_eq!(get(&c, addr, "x", "/").await.body, "a");

    a[0].delay_ms.store(400, Ordering::SeqCst);
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { get(&c, addr, "x", "/slow").await })
    };
    eventually("the slow request reached its backend", || async {
        a[0].hits() == 2
    })
    .await;
    let lb_before = Arc::as_ptr(&p.proxy.table.load().upstream("a").unwrap().lb);
    let config = divvy_proxy::config::parse(&two_upstreams(&a, &b, "b"), "reload.toml").unwrap();
    p.reload(config).unwrap();
    // The unchanged upstream kept its balancer, and so its live state.
    let lb_after = Arc::as_ptr(&p.proxy.table.load().upstream("a").unwrap().lb);
    assert!(std::ptr::addr_eq(lb_before, lb_after));
    assert_eq!(get(&c, addr, "x", "/").await.body, "b");
    let slow = tokio::time::timeout(DEADLINE, slow).await.unwrap().unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (StatusCode::OK, "a"));

    // Reloads back and forth under load: every request is answered 200 by one side or the other.
    a[0].delay_ms.store(0, Ordering::SeqCst);
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (c, done) = (c.clone(), done.clone());
            tokio::spawn(async move {
                let mut bad = 0;
                for _ in 0..100 {
                    if get(&c, addr, "x", "/").await.status != StatusCode::OK {
                        bad += 1;
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                bad
            })
        })
        .collect();
    for i in 0..10 {
        // Spread the reloads over the run.
        let d = done.clone();
        eventually("the load makes progress", || {
            let d = d.clone();
            async move { d.load(Ordering::SeqCst) >= i * 35 }
        })
        .await;
        let target = if i % 2 == 0 { "a" } else { "b" };
        let config =
            divvy_proxy::config::parse(&two_upstreams(&a, &b, target), "reload.toml").unwrap();
        p.reload(config).unwrap();
    }
    let bad = futures_join(workers.into_iter()).await;
    assert_eq!(bad.iter().sum::<u32>(), 0);
}

#[tokio::test]
async fn an_invalid_reload_is_refused_and_the_old_config_keeps_serving() {
    let a = backends(&["a"]).await;
    let b = backends(&["b"]).await;
    let p = proxy(&two_upstreams(&a, &b, "a")).await;
    let dir = std::env::temp_dir().join(format!("divvy-proxy-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.toml");
    std::fs::write(&path, two_upstreams(&a, &b, "nowhere")).unwrap();
    let err = p.reload_file(&path).unwrap_err();
    assert!(err.contains("upstream `nowhere` is not defined"), "{err}");
    assert_eq!(get(&client(), p.listen[0], "x", "/").await.body, "a");
    std::fs::write(&path, two_upstreams(&a, &b, "b")).unwrap();
    p.reload_file(&path).unwrap();
    assert_eq!(get(&client(), p.listen[0], "x", "/").await.body, "b");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_drains_requests_in_flight() {
    let a = backends(&["a"]).await;
    let b = backends(&["b"]).await;
    let p = proxy(&two_upstreams(&a, &b, "a")).await;
    let addr = p.listen[0];
    a[0].delay_ms.store(300, Ordering::SeqCst);
    let c = client();
    let slow = {
        let c = c.clone();
        tokio::spawn(async move { get(&c, addr, "x", "/").await })
    };
    eventually("the request is in flight", || async { a[0].hits() == 1 }).await;
    tokio::time::timeout(DEADLINE, p.shutdown()).await.unwrap();
    let slow = tokio::time::timeout(DEADLINE, slow).await.unwrap().unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (StatusCode::OK, "a"));
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}
