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
         [upstream.app]\nstrategy = \"ketama\"\nhash = {{ key = \"uri\" }}\n{servers}"
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

/// A small deterministic generator (xorshift64*), so the sweep below is the same on every run.
struct Gen(u64);

impl Gen {
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        from[(r >> 33) as usize % from.len()]
    }
}

#[tokio::test]
async fn every_config_the_check_accepts_starts() {
    // Valid values, then values the check must refuse; each config draws one field from both.
    let durations = ["\"1ms\"", "\"24h\"", "86400", "\"1440m\"", "1", "\"250ms\""];
    let bad_durations = [
        "86401",
        "\"25h\"",
        "\"0s\"",
        "18446744073709551615",
        "\"999999999999h\"",
    ];
    // Small weights: a 10000-weight hash ring takes seconds to build in a debug test binary.
    let weights = ["1", "7", "100"];
    let bad_weights = ["0", "10001"];
    let connections = ["1", "512", "1048576"];
    let bad_connections = ["0", "1048577"];
    let strategies = [
        "round_robin",
        "weighted_round_robin",
        "least_conn",
        "ip_hash",
        "ketama",
        "maglev",
        "random",
        "p2c",
        "p2c_ewma",
    ];
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..60 {
        let strategy = g.pick(&strategies);
        let hash = if strategy == "ketama" || strategy == "maglev" {
            "hash = { key = \"uri\" }\n".to_owned()
        } else {
            String::new()
        };
        let wild = g.pick(&["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"]);
        let mut values = Vec::new();
        for field in 0..12 {
            let (good, bad): (&[&str], &[&str]) = match field {
                0..=8 => (&durations, &bad_durations),
                9 => (&connections, &bad_connections),
                _ => (&weights, &bad_weights),
            };
            let value = if field.to_string() == wild && g.pick(&["good", "bad"]) == "bad" {
                g.pick(bad)
            } else {
                g.pick(good)
            };
            values.push(value);
        }
        let src = format!(
            "listen = [\"127.0.0.1:0\"]\nshutdown_timeout = {}\n\
             [client]\nheader_timeout = {}\nkeepalive_timeout = {}\nmax_connections = {}\n\
             [[host]]\ndefault = true\nupstream = \"app\"\n\
             [upstream.app]\nstrategy = \"{strategy}\"\n{hash}\
             fail_timeout = {}\nread_timeout = {}\nresponse_timeout = {}\nconnect_timeout = {}\n\
             [upstream.app.health_check]\ninterval = {}\ntimeout = {}\n\
             [[upstream.app.server]]\naddress = \"127.0.0.1:9\"\nweight = {}\n\
             [[upstream.app.server]]\naddress = \"127.0.0.1:10\"\nweight = {}\n",
            values[0],
            values[1],
            values[2],
            values[9],
            values[3],
            values[4],
            values[5],
            values[6],
            values[7],
            values[8],
            values[10],
            values[11],
        );
        match divvy_proxy::config::parse(&src, "gen.toml") {
            Err(d) => {
                refused += 1;
                assert!(d.iter().all(|d| d.line >= 1 && d.column >= 1), "{d:?}");
            }
            Ok(config) => {
                accepted += 1;
                let running = divvy_proxy::server::start(config)
                    .await
                    .unwrap_or_else(|e| panic!("checked but did not start: {e}\n{src}"));
                tokio::time::timeout(DEADLINE, running.shutdown())
                    .await
                    .unwrap();
            }
        }
    }
    // The sweep exercises both sides.
    assert!(
        accepted >= 10 && refused >= 5,
        "{accepted} accepted, {refused} refused"
    );
}
