//! `--check` and the config checker's diagnostics.

use crate::support::*;

fn diagnostics(src: &str) -> Vec<String> {
    match divvy_proxy::config::parse(src, "test.toml") {
        Ok(_) => Vec::new(),
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}

const BROKEN: &str = r#"listen = ["127.0.0.1:8080", "nope"]
colour = "blue"

[[host]]
names = ["example.com"]
upstream = "missing"

[upstream.app]
strategy = "fastest"
retries = 2

[[upstream.app.server]]
address = "127.0.0.1:8081"
weight = 0

[[upstream.app.server]]
address = "127.0.0.1:8081"

[[upstream.app.server]]
address = "localhost:80"
bogus = true
"#;

#[test]
fn check_reports_every_error_with_file_line_column_and_field() {
    let strategies =
        "round_robin, weighted_round_robin, least_conn, ip_hash, ketama, maglev, random, p2c, p2c_ewma";
    assert_eq!(
        diagnostics(BROKEN),
        vec![
            "test.toml:1:29: listen[1]: invalid address `nope` (expected IP:PORT, e.g. 127.0.0.1:8080; the proxy does no DNS)".to_owned(),
            "test.toml:2:1: colour: unknown key (expected one of: listen, admin, client, shutdown_timeout, forwarded_header, host, upstream)".to_owned(),
            "test.toml:6:12: host[0].upstream: upstream `missing` is not defined".to_owned(),
            format!("test.toml:9:12: upstream.app.strategy: unknown strategy `fastest` (expected one of: {strategies})"),
            "test.toml:14:10: upstream.app.server[0].weight: must be between 1 and 10000, got 0".to_owned(),
            "test.toml:17:11: upstream.app.server[1].address: duplicate server 127.0.0.1:8081 (first at line 13)".to_owned(),
            "test.toml:20:11: upstream.app.server[2].address: invalid address `localhost:80` (expected IP:PORT, e.g. 127.0.0.1:8080; the proxy does no DNS)".to_owned(),
            "test.toml:21:1: upstream.app.server[2].bogus: unknown key (expected one of: address, weight, backup, zone, down, max_conns)".to_owned(),
        ]
    );
}

#[test]
fn check_reports_host_hash_and_duration_mistakes() {
    let src = r#"listen = "127.0.0.1:8080"
shutdown_timeout = "soon"

[[host]]
names = ["a.test", "*.b.test"]
default = true
upstream = "app"

[[host]]
names = ["A.test", "x.*.test"]
default = true
upstream = "app"

[upstream.app]
strategy = "hash"
fail_timeout = 0

[upstream.app.hash]
method = "rendezvous"
bounded_load = 0.5

[[upstream.app.server]]
address = "127.0.0.1:8081"
"#;
    assert_eq!(
        diagnostics(src),
        vec![
            "test.toml:2:20: shutdown_timeout: invalid duration (expected a number with a unit: ms, s, m or h, e.g. \"500ms\")",
            "test.toml:10:10: host[1].names[0]: duplicate host name `a.test` (first at line 5)",
            "test.toml:10:20: host[1].names[1]: invalid host name `x.*.test` (expected a name such as example.com or *.example.com)",
            "test.toml:11:11: host[1].default: a default host is already defined at line 6",
            "test.toml:15:12: upstream.app.strategy: unknown strategy `hash` (nginx's `hash $key consistent` is `ketama`; `maglev` is the lookup table) (expected one of: round_robin, weighted_round_robin, least_conn, ip_hash, ketama, maglev, random, p2c, p2c_ewma)",
            "test.toml:16:16: upstream.app.fail_timeout: must be greater than zero",
            "test.toml:18:1: upstream.app.hash: missing `key`",
            r#"test.toml:19:10: upstream.app.hash.method: no longer a field: the strategy names the method (`strategy = "ketama"` or `"maglev"`)"#,
            "test.toml:20:16: upstream.app.hash.bounded_load: must be greater than 1.0 (e.g. 1.25), got 0.5",
        ]
    );
}

#[test]
fn check_reports_a_syntax_error_and_missing_sections() {
    assert_eq!(
        diagnostics("listen = [\"127.0.0.1:8080\"\n"),
        vec!["test.toml:1:27: unclosed array, expected `]`"]
    );
    assert_eq!(
        diagnostics("# nothing\n"),
        vec![
            "test.toml:1:1: listen: missing: at least one address to listen on is required, e.g. listen = [\"127.0.0.1:8080\"]",
            "test.toml:1:1: host: missing: at least one [[host]] is required to route requests",
        ]
    );
}

#[test]
fn the_sample_config_passes_check() {
    let path = SAMPLE_CONFIG;
    if let Err(d) = divvy_proxy::config::load(std::path::Path::new(path)) {
        let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
        panic!("{}", lines.join("\n"));
    }
}

#[test]
fn the_check_flag_exits_non_zero_with_every_error_and_zero_with_ok() {
    let bin = proxy_bin();
    let dir = std::env::temp_dir().join(format!("divvy-proxy-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, BROKEN).unwrap();
    let out = std::process::Command::new(&bin)
        .args(["--check", "--config"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let file = broken.display().to_string();
    assert_eq!(stderr.lines().filter(|l| l.starts_with(&file)).count(), 9);
    assert!(stderr.contains(&format!("{file}:14:10: upstream.app.server[0].weight")));
    assert!(stderr.ends_with(&format!("{file}: 8 errors\n")));

    let sample = SAMPLE_CONFIG;
    let out = std::process::Command::new(&bin)
        .args(["--check", "--config", sample])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "ok\n");
    let _ = std::fs::remove_dir_all(&dir);
}
