//! The binary: the embedded demo and signals.

use crate::support::*;

/// Reads lines from `from` until one contains `needle`, within [`DEADLINE`].
async fn line_with<R: tokio::io::AsyncBufRead + Unpin>(
    from: &mut tokio::io::Lines<R>,
    needle: &str,
) -> String {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match from.next_line().await.unwrap() {
                Some(line) if line.contains(needle) => return line,
                Some(_) => continue,
                None => panic!("output ended before a line with `{needle}`"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line with `{needle}` before the deadline"))
}

fn listen_addr(line: &str) -> std::net::SocketAddr {
    line.rsplit("http://")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("the child is running").to_string();
    let ok = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {pid}");
}

#[tokio::test]
async fn the_demo_runs_three_backends_behind_the_proxy() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(proxy_bin())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = listen_addr(&line_with(&mut out, "proxy listening on http://").await);
    let c = client();
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let a = get(&c, addr, "demo", "/").await;
        assert!(a.body.starts_with("hello from backend-"), "{}", a.body);
        names.insert(a.body.split_whitespace().nth(2).unwrap().to_owned());
    }
    assert_eq!(names.len(), 3, "{names:?}");
    // The access log names the backend that served each request.
    line_with(&mut err, "backend=").await;
    signal(&child, "INT");
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sighup_reloads_the_config_file_and_sigterm_exits_cleanly() {
    use tokio::io::AsyncBufReadExt;
    let a = backends(&["a"]).await;
    let b = backends(&["b"]).await;
    let dir = std::env::temp_dir().join(format!("divvy-proxy-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proxy.toml");
    std::fs::write(&path, two_upstreams(&a, &b, "a")).unwrap();
    let mut child = tokio::process::Command::new(proxy_bin())
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = listen_addr(&line_with(&mut out, "proxy listening on http://").await);
    let c = client();
    assert_eq!(get(&c, addr, "x", "/").await.body, "a");

    std::fs::write(&path, two_upstreams(&a, &b, "b")).unwrap();
    signal(&child, "HUP");
    line_with(&mut err, "reloaded").await;
    assert_eq!(get(&c, addr, "x", "/").await.body, "b");

    std::fs::write(&path, "listen = [").unwrap();
    signal(&child, "HUP");
    line_with(&mut err, "reload refused").await;
    assert_eq!(get(&c, addr, "x", "/").await.body, "b");

    signal(&child, "TERM");
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
