//! `Balance` wrapping a hyper-util client in front of real hyper servers on loopback.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use divvy::strategy::RoundRobin;
use divvy::{Backend, Balancer};
use divvy_tower::{BalanceLayer, HttpClassify, HttpEndpoints, RetryPolicy};
use futures_util::{stream, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::retry::RetryLayer;
use tower::{ServiceBuilder, ServiceExt};

use divvy_test::TestBackend;

use crate::support::{bounded, stats};

/// Sends one GET and returns the name of the server that answered.
async fn get<S>(svc: S) -> Result<String, tower::BoxError>
where
    S: tower::Service<
        http::Request<Empty<Bytes>>,
        Response = http::Response<divvy_tower::PickBody<hyper::body::Incoming>>,
        Error = tower::BoxError,
    >,
{
    let req = http::Request::get("/").body(Empty::new())?;
    let res = svc.oneshot(req).await?;
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(body.to_vec())?)
}

#[tokio::test]
async fn requests_reach_every_real_backend_in_turn() {
    bounded(async {
        let servers = [
            TestBackend::start("a").await,
            TestBackend::start("b").await,
            TestBackend::start("c").await,
        ];
        let lb = Balancer::new(
            RoundRobin::new(),
            servers.iter().map(|s| Backend::from_addr(s.addr)),
        )
        .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let svc = ServiceBuilder::new()
            .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
            .service(HttpEndpoints::new(client));
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(get(svc.clone()).await.unwrap());
        }
        assert_eq!(seen, ["a", "b", "c", "a", "b", "c"]);
        for s in &servers {
            assert_eq!(s.hits(), 2);
            let st = stats(&lb, &s.addr.to_string());
            assert_eq!((st.successes, st.in_flight), (2, 0));
        }
    })
    .await;
}

#[tokio::test]
async fn killing_a_backend_during_a_thousand_gets_fails_none_of_them() {
    bounded(async {
        let servers = [
            TestBackend::start("a").await,
            TestBackend::start("b").await,
            TestBackend::start("c").await,
        ];
        let victim = servers[1].addr.to_string();
        let lb = Balancer::new(
            RoundRobin::new(),
            servers.iter().map(|s| Backend::from_addr(s.addr)),
        )
        .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let svc = ServiceBuilder::new()
            .layer(RetryLayer::new(RetryPolicy::new(3)))
            .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
            .service(HttpEndpoints::new(client));

        // 1,000 GETs, 16 at a time; `b` is killed after the 300th answer, with requests to it
        // in flight and idle pooled connections to it in the client.
        let killed = Arc::new(AtomicBool::new(false));
        let mut answers = stream::iter(0..1000)
            .map(|_| {
                let (svc, killed) = (svc.clone(), killed.clone());
                async move {
                    // Read on the first poll: true only for requests started after the kill.
                    let started_after_kill = killed.load(Ordering::Relaxed);
                    (started_after_kill, get(svc).await)
                }
            })
            .buffer_unordered(16);
        let mut by_server: HashMap<String, usize> = HashMap::new();
        let mut after_kill: HashMap<String, usize> = HashMap::new();
        let mut done = 0;
        let mut hits_at_kill = 0;
        while let Some((started_after_kill, answer)) = answers.next().await {
            let name = answer.unwrap_or_else(|e| panic!("request {done} failed: {e:?}"));
            if started_after_kill {
                *after_kill.entry(name.clone()).or_default() += 1;
            }
            *by_server.entry(name).or_default() += 1;
            done += 1;
            if done == 300 {
                servers[1].kill();
                hits_at_kill = servers[1].hits();
                killed.store(true, Ordering::Relaxed);
            }
        }
        assert_eq!(done, 1000);
        assert_eq!(by_server.values().sum::<usize>(), 1000);
        assert!(by_server["b"] > 0, "b served before it died");
        assert!(after_kill.values().sum::<usize>() >= 1000 - 300 - 16);
        assert_eq!(after_kill.get("b"), None, "nothing from b after it died");
        assert_eq!(servers[1].hits(), hits_at_kill);
        // The connect failures fed passive health: b is out of rotation.
        let b = stats(&lb, &victim);
        assert!(b.failures >= 1);
        assert!(!b.available);
        assert_eq!(lb.stats().iter().map(|s| s.in_flight).sum::<u32>(), 0);
    })
    .await;
}

#[test]
fn the_hyper_stack_and_its_futures_are_send_so_a_server_can_spawn_them() {
    use divvy_tower::extract::ClientIp;
    use divvy_tower::{Balance, PickBody};
    use hyper::body::Incoming;
    use hyper_util::client::legacy::connect::HttpConnector;

    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    type Client_ = Client<HttpConnector, Empty<Bytes>>;
    type Stack = tower::retry::Retry<
        RetryPolicy<Incoming>,
        Balance<RoundRobin, HttpEndpoints<Client_>, ClientIp, HttpClassify>,
    >;
    type Fut = <Stack as tower::Service<http::Request<Empty<Bytes>>>>::Future;
    send::<Stack>();
    sync::<Stack>();
    send::<Fut>();
    send::<PickBody<Incoming>>();
}
