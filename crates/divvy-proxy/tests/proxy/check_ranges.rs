//! `--check` refuses every value the running proxy would fail on, with `file:line:column`;
//! and what it accepts, `start` serves.

use crate::support::*;

/// A config with one upstream over 127.0.0.1:9; `client`, `upstream` and `health` are extra
/// lines in those tables.
fn config(client: &str, upstream: &str, health: &str) -> String {
    format!(
        "listen = [\"127.0.0.1:0\"]\n\
         shutdown_timeout = \"1s\"\n\
         [client]\n{client}\n\
         [[host]]\ndefault = true\nupstream = \"app\"\n\
         [upstream.app]\n{upstream}\n\
         [upstream.app.health_check]\npath = \"/healthz\"\n{health}\n\
         [[upstream.app.server]]\naddress = \"127.0.0.1:9\"\n"
    )
}

fn only_error(src: &str) -> String {
    match divvy_proxy::config::parse(src, "test.toml") {
        Ok(_) => panic!("accepted:\n{src}"),
        Err(d) => {
            assert_eq!(d.len(), 1, "{d:?}");
            d[0].to_string()
        }
    }
}

#[test]
fn huge_integer_durations_are_refused_with_file_line_and_column() {
    let huge = "18446744073709551615";
    let cases = [
        (
            config(&format!("header_timeout = {huge}"), "", ""),
            "test.toml:4:18: client.header_timeout: must be at most 24h",
        ),
        (
            config(&format!("keepalive_timeout = {huge}"), "", ""),
            "test.toml:4:21: client.keepalive_timeout: must be at most 24h",
        ),
        (
            config("", &format!("read_timeout = {huge}"), ""),
            "test.toml:9:16: upstream.app.read_timeout: must be at most 24h",
        ),
        (
            config("", &format!("fail_timeout = \"{huge}ms\""), ""),
            "test.toml:9:16: upstream.app.fail_timeout: must be at most 24h",
        ),
        (
            config("", "", &format!("interval = {huge}")),
            "test.toml:12:12: upstream.app.health_check.interval: must be at most 24h",
        ),
        (
            config("", "", "timeout = \"25h\""),
            "test.toml:12:11: upstream.app.health_check.timeout: must be at most 24h, got 25h",
        ),
    ];
    for (src, want) in cases {
        let got = only_error(&src);
        assert!(got.starts_with(want), "got {got:?}, want {want:?}");
    }
}

#[test]
fn a_hash_ring_over_its_point_limit_fails_the_check_at_the_upstream() {
    // The ring thins to fewer points per weight as a set grows, down to one per unit of weight:
    // 1678 servers of weight 10000 sum past its 2^24 points even then.
    let servers: String = (0..1678)
        .map(|i| {
            format!(
                "[[upstream.app.server]]\naddress = \"127.0.0.1:{}\"\nweight = 10000\n",
                10000 + i
            )
        })
        .collect();
    let src = format!(
        "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"app\"\n\
         [upstream.app]\nstrategy = \"hash\"\nhash = {{ key = \"uri\" }}\n{servers}"
    );
    let got = only_error(&src);
    assert!(got.starts_with("test.toml:5:1: upstream.app: "), "{got}");
    assert!(got.contains("weights sum to 16780000"), "{got}");
}

#[tokio::test]
async fn the_largest_accepted_values_start_and_serve() {
    let bs = backends(&["a"]).await;
    let upstream = "fail_timeout = \"24h\"\nconnect_timeout = \"24h\"\nresponse_timeout = \"24h\"\nread_timeout = \"24h\"";
    let src = config(
        "header_timeout = \"24h\"\nkeepalive_timeout = \"24h\"\nmax_connections = 1048576\nmax_headers = 200000",
        upstream,
        "interval = \"24h\"\ntimeout = \"24h\"",
    )
    .replace("127.0.0.1:9", &bs[0].addr.to_string());
    let p = proxy(&src).await;
    let c = client();
    let a = get(&c, p.listen[0], "x", "/").await;
    assert_eq!(a.body, "a");
    // 24 h of drain would hold the test: shutting down with nothing in flight returns at once.
    tokio::time::timeout(DEADLINE, p.shutdown()).await.unwrap();
}
