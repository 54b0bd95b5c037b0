//! Per-server options: `backup`, `down`, `max_conns`, and the proxy's zone.

use std::sync::atomic::Ordering;

use http::StatusCode;

use crate::support::*;

#[tokio::test]
async fn a_backup_takes_over_when_the_primary_dies_and_hands_back_when_it_returns() {
    let bs = backends(&["primary", "backup"]).await;
    let toml = resilient(&bs, "").replace(
        &format!("address = \"{}\"\n", bs[1].addr),
        &format!("address = \"{}\"\nbackup = true\n", bs[1].addr),
    );
    let p = proxy(&toml).await;
    let c = client();
    let addr = p.listen[0];
    assert_eq!(tally(&c, addr, "x", 6).await, counts(&[("primary", 6)]));
    bs[0].kill();
    // Requests keep succeeding: the one that finds the primary dead is retried on the backup.
    assert_eq!(tally(&c, addr, "x", 6).await, counts(&[("backup", 6)]));
    bs[0].restart().await;
    eventually("the primary is marked up again", || async {
        available(&p, "app", bs[0].addr)
    })
    .await;
    assert_eq!(tally(&c, addr, "x", 6).await, counts(&[("primary", 6)]));
}

#[tokio::test]
async fn down_servers_get_nothing_and_max_conns_caps_requests_in_flight() {
    let bs = backends(&["capped", "other", "off"]).await;
    bs[0].delay_ms.store(300, Ordering::SeqCst);
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"app\"\n[upstream.app]\n{}",
        servers("app", &bs, &["weight = 10\nmax_conns = 1", "", "down = true"])
    );
    let p = proxy(&toml).await;
    let c = client();
    let addr = p.listen[0];
    // Three at once: the heavy server takes one (its limit), the rest go to the other.
    let answers = futures_join((0..3).map(|_| {
        let c = c.clone();
        tokio::spawn(async move { get(&c, addr, "x", "/").await })
    }))
    .await;
    assert!(answers.iter().all(|a| a.status == StatusCode::OK));
    assert_eq!((bs[0].hits(), bs[1].hits(), bs[2].hits()), (1, 2, 0));
}

#[tokio::test]
async fn the_proxy_zone_is_preferred_until_its_servers_fail() {
    let bs = backends(&["near", "far"]).await;
    let toml = resilient(&bs, "zone = \"z1\"\n")
        .replace(
            &format!("address = \"{}\"\n", bs[0].addr),
            &format!("address = \"{}\"\nzone = \"z1\"\n", bs[0].addr),
        )
        .replace(
            &format!("address = \"{}\"\n", bs[1].addr),
            &format!("address = \"{}\"\nzone = \"z2\"\n", bs[1].addr),
        );
    let p = proxy(&toml).await;
    let c = client();
    assert_eq!(tally(&c, p.listen[0], "x", 4).await, counts(&[("near", 4)]));
    bs[0].kill();
    assert_eq!(tally(&c, p.listen[0], "x", 4).await, counts(&[("far", 4)]));
}
