//! The admin listener: `/status` and `/metrics`.

use crate::support::*;

#[tokio::test]
async fn the_admin_listener_reports_status_and_metrics() {
    let bs = backends(&["a", "b"]).await;
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[[host]]\ndefault = true\n\
         upstream = \"app\"\n[upstream.app]\nstrategy = \"round_robin\"\n{}",
        servers("app", &bs, &[])
    );
    let p = proxy(&toml).await;
    let c = client();
    tally(&c, p.listen[0], "x", 4).await;
    let admin = p.admin.expect("admin enabled");
    let status = get(&c, admin, "admin", "/status").await;
    let v: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(v["responses"]["2xx"], 4);
    let backends = v["upstreams"][0]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    for b in backends {
        assert_eq!(b["successes"], 2);
        assert_eq!(b["available"], true);
    }
    let m = get(&c, admin, "admin", "/metrics").await.body;
    assert!(
        m.contains("divvy_proxy_responses_total{code=\"2xx\"} 4"),
        "{m}"
    );
    let line = format!(
        "divvy_backend_successes_total{{upstream=\"app\",backend=\"{}\"}} 2",
        bs[0].addr
    );
    assert!(m.contains(&line), "{m}");
}

#[tokio::test]
async fn the_admin_listener_is_off_unless_configured() {
    let bs = backends(&["a"]).await;
    let toml = simple("", &bs);
    assert_eq!(proxy(&toml).await.admin, None);
}
