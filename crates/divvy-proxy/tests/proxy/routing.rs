//! Distribution over backends, and routing by host, path and absolute-form URI.

use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn round_robin_sends_each_backend_one_request_per_cycle() {
    let bs = backends(&["a", "b", "c"]).await;
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"app\"\n\
         [upstream.app]\nstrategy = \"round_robin\"\n{}",
        servers("app", &bs, &[])
    );
    let p = proxy(&toml).await;
    let c = client();
    // Every window of three consecutive answers names each backend once.
    for _ in 0..5 {
        let cycle = tally(&c, p.listen[0], "x.test", 3).await;
        assert_eq!(cycle, counts(&[("a", 1), ("b", 1), ("c", 1)]));
    }
}

#[tokio::test]
async fn weighted_round_robin_is_the_default_and_follows_nginx_smooth_sequence() {
    let bs = backends(&["a", "b", "c"]).await;
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"app\"\n[upstream.app]\n{}",
        servers("app", &bs, &["weight = 5", "", ""])
    );
    let p = proxy(&toml).await;
    let c = client();
    // nginx documents weights 5, 1, 1 as the smooth sequence a a b a c a a.
    let mut seq = String::new();
    for _ in 0..14 {
        seq.push_str(&get(&c, p.listen[0], "x", "/").await.body);
    }
    assert_eq!(seq, "aabacaaaabacaa");
}

#[tokio::test]
async fn every_strategy_in_the_config_serves_requests() {
    let bs = backends(&["a", "b", "c"]).await;
    let c = client();
    let ketama = "[upstream.app.hash]\nkey = \"uri\"\n";
    let maglev = "[upstream.app.hash]\nkey = \"uri\"\nbounded_load = 1.5\n";
    for (strategy, extra) in [
        ("round_robin", ""),
        ("weighted_round_robin", ""),
        ("least_conn", ""),
        ("ip_hash", ""),
        ("random", ""),
        ("p2c", ""),
        ("p2c_ewma", ""),
        ("ketama", ketama),
        ("maglev", maglev),
    ] {
        let toml = format!(
            "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"app\"\n\
             [upstream.app]\nstrategy = \"{strategy}\"\n{extra}{}",
            servers("app", &bs, &[])
        );
        let p = proxy(&toml).await;
        let served = tally(&c, p.listen[0], "x", 6).await;
        assert_eq!(served.values().sum::<usize>(), 6, "{strategy}");
    }
}

#[tokio::test]
async fn hash_by_header_keeps_each_key_on_one_backend() {
    let bs = backends(&["a", "b", "c"]).await;
    let toml = format!(
        "listen = [\"127.0.0.1:0\"]\n[[host]]\ndefault = true\nupstream = \"app\"\n\
         [upstream.app]\nstrategy = \"ketama\"\n[upstream.app.hash]\nkey = \"header:x-user\"\n{}",
        servers("app", &bs, &[])
    );
    let p = proxy(&toml).await;
    let c = client();
    let mut used = std::collections::BTreeSet::new();
    for user in 0..30 {
        let mut answers = Vec::new();
        for _ in 0..3 {
            let req = Request::get(format!("http://{}/", p.listen[0]))
                .header("x-user", format!("user-{user}"))
                .body(Full::default())
                .unwrap();
            answers.push(send(&c, req).await.body);
        }
        assert!(
            answers.iter().all(|a| *a == answers[0]),
            "user-{user}: {answers:?}"
        );
        used.insert(answers[0].clone());
    }
    // Thirty keys on a ring of three equal backends land on more than one of them.
    assert!(used.len() > 1, "{used:?}");
}

#[tokio::test]
async fn hosts_route_by_exact_name_then_longest_wildcard_then_default() {
    let bs = backends(&["apex", "sub", "api", "deep", "fallback"]).await;
    let mut toml = String::from(
        r#"listen = ["127.0.0.1:0"]

[[host]]
names = ["example.com"]
upstream = "apex"

[[host]]
names = ["*.example.com"]
upstream = "sub"

[[host]]
names = ["api.example.com"]
upstream = "api"

[[host]]
names = ["*.deep.example.com"]
upstream = "deep"

[[host]]
default = true
upstream = "fallback"
"#,
    );
    for (i, name) in ["apex", "sub", "api", "deep", "fallback"]
        .iter()
        .enumerate()
    {
        toml.push_str(&format!(
            "\n[upstream.{name}]\nstrategy = \"round_robin\"\n"
        ));
        toml.push_str(&servers(name, &bs[i..=i], &[]));
    }
    let p = proxy(&toml).await;
    let c = client();
    let addr = p.listen[0];
    for (host, want) in [
        ("example.com", "apex"),
        ("EXAMPLE.com:8080", "apex"),
        ("www.example.com", "sub"),
        ("a.b.example.com", "sub"),
        ("api.example.com", "api"),
        ("x.deep.example.com", "deep"),
        ("deep.example.com", "sub"),
        ("unknown.org", "fallback"),
        ("127.0.0.1", "fallback"),
    ] {
        assert_eq!(get(&c, addr, host, "/").await.body, want, "host {host}");
    }
}

#[tokio::test]
async fn paths_route_by_longest_prefix_and_strip_it_when_asked() {
    let bs = backends(&["web", "api", "v2"]).await;
    let toml = format!(
        r#"listen = ["127.0.0.1:0"]

[[host]]
names = ["site.test"]
upstream = "web"

[[host.route]]
path = "/api/"
upstream = "api"
strip_prefix = true

[[host.route]]
path = "/api/v2/"
upstream = "v2"

[upstream.web]
strategy = "round_robin"
{}
[upstream.api]
strategy = "round_robin"
{}
[upstream.v2]
strategy = "round_robin"
{}"#,
        servers("web", &bs[0..1], &[]),
        servers("api", &bs[1..2], &[]),
        servers("v2", &bs[2..3], &[])
    );
    let p = proxy(&toml).await;
    let c = client();
    let addr = p.listen[0];
    assert_eq!(get(&c, addr, "site.test", "/").await.body, "web");
    assert_eq!(get(&c, addr, "site.test", "/apis").await.body, "web");
    assert_eq!(
        get(&c, addr, "site.test", "/api/users?id=7").await.body,
        "api"
    );
    assert_eq!(bs[1].seen.lock()[0].uri, "/users?id=7");
    assert_eq!(get(&c, addr, "site.test", "/api/v2/items").await.body, "v2");
    assert_eq!(bs[2].seen.lock()[0].uri, "/api/v2/items");
}

#[tokio::test]
async fn an_absolute_form_uri_never_changes_the_destination() {
    let bs = backends(&["only"]).await;
    let toml = simple("", &bs);
    let p = proxy(&toml).await;
    // A raw request in absolute form naming another server: it must land on the configured
    // backend, with the path only.
    let mut s = TcpStream::connect(p.listen[0]).await.unwrap();
    s.write_all(b"GET http://198.51.100.1:9/steal?x=1 HTTP/1.1\r\nHost: 198.51.100.1:9\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(DEADLINE, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("only"), "{out}");
    assert_eq!(bs[0].seen.lock()[0].uri, "/steal?x=1");

    // CONNECT tunnels go nowhere.
    let mut s = TcpStream::connect(p.listen[0]).await.unwrap();
    s.write_all(b"CONNECT 198.51.100.1:443 HTTP/1.1\r\nHost: 198.51.100.1:443\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 405");
    assert_eq!(bs[0].hits(), 1);
}
