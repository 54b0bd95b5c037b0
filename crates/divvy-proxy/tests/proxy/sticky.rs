//! Sticky sessions by cookie.

use http::{Request, StatusCode};
use http_body_util::Full;

use crate::support::*;

fn cookie_of(a: &Answer) -> Option<String> {
    let v = a.headers.get("set-cookie")?.to_str().ok()?;
    Some(v.split(';').next()?.to_owned())
}

#[tokio::test]
async fn a_sticky_cookie_keeps_a_client_on_one_backend_and_re_pins_after_failure() {
    let bs = backends(&["a", "b", "c"]).await;
    let p = proxy(&resilient(&bs, "[upstream.app.sticky]\ncookie = \"lb\"\n")).await;
    let c = client();
    let addr = p.listen[0];
    let first = get(&c, addr, "x", "/").await;
    let cookie = cookie_of(&first).expect("a sticky cookie");
    let value = cookie.strip_prefix("lb=").unwrap();
    assert_eq!(value.len(), 16);
    assert!(!value.contains("127.0.0.1"));
    let pinned = first.body.clone();
    let with_cookie = |cookie: String| {
        let c = c.clone();
        async move {
            let req = Request::get(format!("http://{addr}/"))
                .header("cookie", format!("theme=dark; {cookie}"))
                .body(Full::default())
                .unwrap();
            send(&c, req).await
        }
    };
    for _ in 0..9 {
        let a = with_cookie(cookie.clone()).await;
        assert_eq!(a.body, pinned);
        assert!(cookie_of(&a).is_none(), "a valid pin is not re-issued");
    }
    let victim = bs.iter().find(|b| b.name == pinned).unwrap();
    victim.kill();
    let moved = with_cookie(cookie.clone()).await;
    assert_eq!(moved.status, StatusCode::OK);
    assert_ne!(moved.body, pinned);
    let new_cookie = cookie_of(&moved).expect("the cookie is re-issued");
    assert_ne!(new_cookie, cookie);
    for _ in 0..5 {
        assert_eq!(with_cookie(new_cookie.clone()).await.body, moved.body);
    }
}
