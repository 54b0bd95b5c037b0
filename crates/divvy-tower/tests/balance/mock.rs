//! `Balance` over scripted mock endpoints.

use std::time::Duration;

use bytes::Bytes;
use divvy::strategy::RoundRobin;
use divvy::{AdminState, Backend, Balancer};
use divvy_tower::error::{BackendFailed, NoBackendAvailable};
use divvy_tower::extract::{ClientAddr, ClientIp, HeaderKey, StickyCookie};
use divvy_tower::{BalanceLayer, HttpClassify, RetryPolicy};
use futures_util::FutureExt;
use http_body_util::BodyExt;
use tower::retry::RetryLayer;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

use crate::support::{
    bounded, stats, without_passive_health, ByContext, FirstAvailable, Mock, Reply,
};

type Req = http::Request<()>;

fn get() -> Req {
    http::Request::get("/").body(()).unwrap()
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly_over_every_backend() {
    let mock = Mock::new();
    let lb = Balancer::new(RoundRobin::new(), ["a", "b", "c"].map(Backend::new)).unwrap();
    let svc = ServiceBuilder::new()
        .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
        .service(mock.maker());
    for _ in 0..300 {
        let res = bounded(svc.clone().oneshot(get())).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let calls = mock.calls();
    for id in ["a", "b", "c"] {
        assert_eq!(calls.iter().filter(|c| *c == id).count(), 100, "{id}");
        let s = stats(&lb, id);
        assert_eq!((s.picks, s.successes, s.in_flight), (100, 100, 0), "{id}");
    }
}

#[tokio::test]
async fn a_streaming_response_holds_its_backend_until_the_body_ends() {
    let mock = Mock::new();
    mock.script("a", Reply::Stream);
    let mut tx = mock.stream();
    let lb = without_passive_health(FirstAvailable, &["a"]);
    let svc = ServiceBuilder::new()
        .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
        .service(mock.maker());

    let res = bounded(svc.oneshot(get())).await.unwrap();
    assert_eq!(res.body().backend().id(), "a");
    assert_eq!(stats(&lb, "a").in_flight, 1, "in flight after the head");
    assert_eq!(stats(&lb, "a").successes, 0, "a success waits for the body");

    let mut body = res.into_body();
    bounded(tx.send_data(Bytes::from_static(b"part")))
        .await
        .unwrap();
    let frame = bounded(body.frame()).await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "part");
    assert_eq!(stats(&lb, "a").in_flight, 1, "in flight mid-body");

    drop(tx);
    assert!(bounded(body.frame()).await.is_none());
    let s = stats(&lb, "a");
    assert_eq!(
        (s.in_flight, s.successes, s.failures),
        (0, 1, 0),
        "ended with the body"
    );
}

#[tokio::test]
async fn dropping_an_unread_body_ends_the_request() {
    let mock = Mock::new();
    mock.script("a", Reply::Stream);
    let _tx = mock.stream();
    let lb = without_passive_health(FirstAvailable, &["a"]);
    let svc = ServiceBuilder::new()
        .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
        .service(mock.maker());

    let res = bounded(svc.oneshot(get())).await.unwrap();
    assert_eq!(stats(&lb, "a").in_flight, 1);
    drop(res);
    assert_eq!(stats(&lb, "a").in_flight, 0);
}

#[tokio::test]
async fn a_body_that_fails_midway_is_a_failure_of_its_backend() {
    let mock = Mock::new();
    mock.script("a", Reply::Stream);
    let tx = mock.stream();
    let lb = without_passive_health(FirstAvailable, &["a"]);
    let svc = ServiceBuilder::new()
        .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
        .service(mock.maker());

    let res = bounded(svc.oneshot(get())).await.unwrap();
    assert_eq!(res.status(), 200);
    tx.abort(std::io::Error::other("backend died mid-body"));
    let mut body = res.into_body();
    assert!(bounded(body.frame()).await.unwrap().is_err());
    let s = stats(&lb, "a");
    assert_eq!((s.in_flight, s.successes, s.failures), (0, 0, 1));
}

#[tokio::test]
async fn with_consecutive_5xx_a_server_error_counts_as_a_failure_and_a_not_found_does_not() {
    let mock = Mock::new();
    mock.script("a", Reply::Status(500));
    mock.script("b", Reply::Status(404));
    let lb = Balancer::new(RoundRobin::new(), ["a", "b"].map(Backend::new)).unwrap();
    let svc = ServiceBuilder::new()
        .layer(BalanceLayer::new(
            lb.clone(),
            (),
            HttpClassify::consecutive_5xx(),
        ))
        .service(mock.maker());
    for _ in 0..2 {
        // Reading the body to its end is what reports a success.
        let res = bounded(svc.clone().oneshot(get())).await.unwrap();
        bounded(res.into_body().collect()).await.unwrap();
    }
    let (a, b) = (stats(&lb, "a"), stats(&lb, "b"));
    assert_eq!((a.successes, a.failures), (0, 1), "500 from a");
    assert_eq!((b.successes, b.failures), (1, 0), "404 from b");
}

#[tokio::test]
async fn by_default_a_server_error_is_the_applications_answer_not_a_failure() {
    // nginx's default: an application's 500 does not count towards `max_fails`.
    let mock = Mock::new();
    mock.script("a", Reply::Status(500));
    let lb = Balancer::new(RoundRobin::new(), ["a"].map(Backend::new)).unwrap();
    let svc = ServiceBuilder::new()
        .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::default()))
        .service(mock.maker());
    let res = bounded(svc.oneshot(get())).await.unwrap();
    assert_eq!(res.status(), 500);
    bounded(res.into_body().collect()).await.unwrap();
    let a = stats(&lb, "a");
    assert_eq!((a.successes, a.failures), (1, 0));
    assert!(a.available, "one application 500 ejects nobody");
}

#[tokio::test]
async fn an_error_is_a_failure_that_names_its_backend_and_keeps_its_cause() {
    let mock = Mock::new();
    mock.script("a", Reply::Refuse);
    let lb = without_passive_health(FirstAvailable, &["a"]);
    let svc = ServiceBuilder::new()
        .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
        .service(mock.maker());
    let err = bounded(svc.oneshot(get())).await.unwrap_err();
    let failed = err.downcast_ref::<BackendFailed>().expect("BackendFailed");
    assert_eq!(failed.backend().id(), "a");
    let io = std::error::Error::source(failed)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("the endpoint's io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    let s = stats(&lb, "a");
    assert_eq!((s.failures, s.in_flight, s.latency_ewma), (1, 0, None));
}

#[tokio::test]
async fn no_backend_available_fails_at_once_with_a_typed_error() {
    let mock = Mock::new();
    let lb = Balancer::new(RoundRobin::new(), ["a", "b"].map(Backend::new)).unwrap();
    for id in ["a", "b"] {
        lb.set_admin_state(id, Some(AdminState::Down)).unwrap();
    }
    let mut svc = ServiceBuilder::new()
        .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
        .service(mock.maker());
    // Ready without waiting, and the response future is ready on its first poll.
    let ready = ServiceExt::<Req>::ready(&mut svc)
        .now_or_never()
        .expect("ready at once");
    let fut = ready.unwrap().call(get());
    let err = fut.now_or_never().expect("no waiting").unwrap_err();
    let e = err
        .downcast_ref::<NoBackendAvailable>()
        .expect("NoBackendAvailable");
    assert_eq!(
        e.pick_error(),
        &divvy::PickError::NoneAvailable { total: 2 }
    );
    assert!(mock.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn latency_is_measured_from_call_to_the_response_head() {
    let mock = Mock::new();
    mock.script("a", Reply::After(Duration::from_millis(40)));
    let lb = without_passive_health(FirstAvailable, &["a"]);
    let svc = ServiceBuilder::new()
        .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
        .service(mock.maker());
    let res = bounded(svc.oneshot(get())).await.unwrap();
    drop(res);
    // The first sample is the EWMA's value; tokio's paused clock makes it exact.
    assert_eq!(
        stats(&lb, "a").latency_ewma,
        Some(Duration::from_millis(40))
    );
}

#[tokio::test]
async fn a_retry_goes_to_a_backend_not_tried_yet() {
    let mock = Mock::new();
    mock.script("a", Reply::Refuse);
    // First-available would pick `a` again on every try: only the exclusion moves it on.
    let lb = without_passive_health(FirstAvailable, &["a", "b", "c"]);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::new(3)))
        .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
        .service(mock.maker());
    let res = bounded(svc.oneshot(get())).await.unwrap();
    assert_eq!(res.body().backend().id(), "b");
    assert_eq!(mock.calls(), ["a", "b"]);
    assert_eq!(stats(&lb, "a").failures, 1);
}

#[tokio::test]
async fn tries_are_bounded_and_the_last_failure_is_returned() {
    let mock = Mock::new();
    for id in ["a", "b", "c"] {
        mock.script(id, Reply::Refuse);
    }
    let lb = without_passive_health(FirstAvailable, &["a", "b", "c"]);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::new(2)))
        .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
        .service(mock.maker());
    let err = bounded(svc.oneshot(get())).await.unwrap_err();
    assert_eq!(mock.calls(), ["a", "b"]);
    let failed = err.downcast_ref::<BackendFailed>().expect("BackendFailed");
    assert_eq!(failed.backend().id(), "b");
}

#[tokio::test]
async fn when_every_backend_was_tried_the_last_real_failure_wins_over_no_backend() {
    let mock = Mock::new();
    mock.script("a", Reply::Refuse);
    mock.script("b", Reply::Refuse);
    let lb = without_passive_health(FirstAvailable, &["a", "b"]);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::new(5)))
        .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
        .service(mock.maker());
    let err: BoxError = bounded(svc.oneshot(get())).await.unwrap_err();
    assert_eq!(mock.calls(), ["a", "b"], "never the same backend twice");
    let failed = err
        .downcast_ref::<BackendFailed>()
        .expect("not NoBackendAvailable");
    assert_eq!(failed.backend().id(), "b");
    assert_eq!(stats(&lb, "a").in_flight + stats(&lb, "b").in_flight, 0);
}

#[tokio::test]
async fn a_post_is_not_retried() {
    let mock = Mock::new();
    mock.script("a", Reply::Refuse);
    let lb = without_passive_health(FirstAvailable, &["a", "b"]);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::new(3)))
        .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
        .service(mock.maker());
    let post = http::Request::post("/").body(()).unwrap();
    let err = bounded(svc.oneshot(post)).await.unwrap_err();
    assert!(err.is::<BackendFailed>());
    assert_eq!(mock.calls(), ["a"]);
}

#[tokio::test]
async fn a_post_is_retried_when_the_error_proves_it_was_never_sent() {
    let mock = Mock::new();
    mock.script("a", Reply::Refuse);
    let lb = without_passive_health(FirstAvailable, &["a", "b"]);
    let policy = RetryPolicy::new(3).non_idempotent_when(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
        .service(mock.maker());
    let post = http::Request::post("/").body(()).unwrap();
    let res = bounded(svc.oneshot(post)).await.unwrap();
    assert_eq!(res.body().backend().id(), "b");
    assert_eq!(mock.calls(), ["a", "b"]);
}

#[tokio::test]
async fn gateway_errors_are_final_unless_the_policy_retries_them() {
    for (policy, expect_status, expect_calls) in [
        (RetryPolicy::new(3), 503, vec!["a"]),
        (RetryPolicy::new(3).on_gateway_errors(), 200, vec!["a", "b"]),
    ] {
        let mock = Mock::new();
        mock.script("a", Reply::Status(503));
        let lb = without_passive_health(FirstAvailable, &["a", "b"]);
        let svc = ServiceBuilder::new()
            .layer(RetryLayer::new(policy))
            .layer(BalanceLayer::new(
                lb.clone(),
                (),
                HttpClassify::gateway_errors(),
            ))
            .service(mock.maker());
        let res = bounded(svc.oneshot(get())).await.unwrap();
        assert_eq!(res.status(), expect_status);
        assert_eq!(mock.calls(), expect_calls);
        drop(res);
        assert_eq!(stats(&lb, "a").failures, 1);
        assert_eq!(stats(&lb, "a").in_flight, 0);
    }
}

#[tokio::test]
async fn a_sticky_cookie_pins_the_request_to_its_backend() {
    let mock = Mock::new();
    let lb = Balancer::new(RoundRobin::new(), ["a", "b", "c"].map(Backend::new)).unwrap();
    let sticky = StickyCookie::new("srv");
    let cookie = format!("srv={}", StickyCookie::value(&Backend::new("c")));
    let svc = ServiceBuilder::new()
        .layer(BalanceLayer::new(lb.clone(), sticky, HttpClassify::new()))
        .service(mock.maker());
    for _ in 0..5 {
        let req = http::Request::get("/")
            .header("cookie", &cookie)
            .body(())
            .unwrap();
        bounded(svc.clone().oneshot(req)).await.unwrap();
    }
    assert_eq!(mock.calls(), ["c"; 5]);
}

#[tokio::test]
async fn only_backends_that_join_get_a_new_service_when_the_set_changes() {
    let mock = Mock::new();
    let lb = Balancer::new(RoundRobin::new(), ["a", "b"].map(Backend::new)).unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
        .service(mock.maker());
    let mut clone = svc.clone();
    assert_eq!(mock.made(), ["a", "b"]);

    lb.update(["b", "c"].map(|id| Backend::new(id).weight(3)))
        .unwrap();
    for _ in 0..4 {
        let ready = ServiceExt::<Req>::ready(&mut svc).await.unwrap();
        bounded(ready.call(get())).await.unwrap();
        let ready = ServiceExt::<Req>::ready(&mut clone).await.unwrap();
        bounded(ready.call(get())).await.unwrap();
    }
    // `b` kept its service (a weight change is not a new backend); `c` got one, once, although
    // two clones saw the change.
    assert_eq!(mock.made(), ["a", "b", "c"]);
    assert_eq!(svc.endpoints(), 2);
    assert!(mock.calls().iter().all(|c| c != "a"));
}

#[tokio::test]
async fn the_client_address_the_server_recorded_reaches_the_strategy() {
    let mock = Mock::new();
    let lb = without_passive_health(ByContext, &["a", "b", "c"]);
    let extract = ClientIp::new().trust(["10.0.0.0/8".parse().unwrap()]);
    let svc = ServiceBuilder::new()
        .layer(BalanceLayer::new(lb.clone(), extract, HttpClassify::new()))
        .service(mock.maker());
    let request = |peer: &str, xff: &str| {
        let mut req = http::Request::get("/")
            .header("x-forwarded-for", xff)
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(ClientAddr(peer.parse().unwrap()));
        req
    };
    // Behind a trusted proxy: the forwarded address (.5 → index 2). From an untrusted peer:
    // the peer itself (.4 → index 1), whatever the header claims.
    bounded(svc.clone().oneshot(request("10.0.0.9:1", "203.0.113.5")))
        .await
        .unwrap();
    bounded(
        svc.clone()
            .oneshot(request("198.51.100.4:1", "203.0.113.5")),
    )
    .await
    .unwrap();
    assert_eq!(mock.calls(), ["c", "b"]);
}

#[tokio::test]
async fn a_hash_key_from_a_header_reaches_the_strategy_and_a_sticky_cookie_wins_over_it() {
    let mock = Mock::new();
    let lb = without_passive_health(ByContext, &["a", "b", "c"]);
    let extract = (
        StickyCookie::new("srv"),
        HeaderKey::new(http::header::HeaderName::from_static("x-user")),
    );
    let svc = ServiceBuilder::new()
        .layer(BalanceLayer::new(lb.clone(), extract, HttpClassify::new()))
        .service(mock.maker());
    // b'b' = 98 → 98 % 3 = 2 → "c".
    let keyed = http::Request::get("/")
        .header("x-user", "bob")
        .body(())
        .unwrap();
    bounded(svc.clone().oneshot(keyed)).await.unwrap();
    let pinned = http::Request::get("/")
        .header("x-user", "bob")
        .header(
            "cookie",
            format!("srv={}", StickyCookie::value(&Backend::new("a"))),
        )
        .body(())
        .unwrap();
    bounded(svc.clone().oneshot(pinned)).await.unwrap();
    assert_eq!(mock.calls(), ["c", "a"]);
}

#[tokio::test]
async fn when_every_backend_answered_a_gateway_error_the_last_answer_is_returned() {
    let mock = Mock::new();
    mock.script("a", Reply::Status(503));
    mock.script("b", Reply::Status(502));
    let lb = without_passive_health(FirstAvailable, &["a", "b"]);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::new(5).on_gateway_errors()))
        .layer(BalanceLayer::new(lb.clone(), (), HttpClassify::new()))
        .service(mock.maker());
    let res = bounded(svc.oneshot(get())).await.unwrap();
    assert_eq!(mock.calls(), ["a", "b"]);
    assert_eq!(res.status(), 502);
    assert_eq!(res.body().backend().id(), "b");
    let body = bounded(res.into_body().collect()).await.unwrap().to_bytes();
    assert_eq!(body, "b");
    assert_eq!(stats(&lb, "a").in_flight + stats(&lb, "b").in_flight, 0);
}

#[tokio::test]
async fn a_service_that_is_not_http_is_balanced_with_the_opaque_tracker() {
    use divvy::Outcome;
    use divvy_tower::track::Opaque;

    let lb = Balancer::new(RoundRobin::new(), ["a", "b"].map(Backend::new)).unwrap();
    let maker = |b: &Backend| {
        let id = b.id().to_owned();
        tower::service_fn(move |req: String| {
            let id = id.clone();
            async move { Ok::<_, std::io::Error>(format!("{id}:{req}")) }
        })
    };
    let classify = |res: &String| {
        if res.ends_with("bad") {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    };
    let svc = ServiceBuilder::new()
        .layer(BalanceLayer::new(lb.clone(), (), classify).track(Opaque))
        .service(maker);
    let mut answers = Vec::new();
    for req in ["x", "y", "bad"] {
        answers.push(bounded(svc.clone().oneshot(req.to_owned())).await.unwrap());
    }
    assert_eq!(answers, ["a:x", "b:y", "a:bad"]);
    let (a, b) = (stats(&lb, "a"), stats(&lb, "b"));
    assert_eq!((a.successes, a.failures, a.in_flight), (1, 1, 0));
    assert_eq!((b.successes, b.failures, b.in_flight), (1, 0, 0));
}
