//! A real etcd server for tests (feature `etcd`): its own process on 127.0.0.1, free ports, a temporary data
//! directory; killed and restarted at will, killed for good when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// A running (or killed) etcd.
#[derive(Debug)]
pub struct EtcdServer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers. `None` when no `etcd` binary is installed, unless
    /// `CI` is set: CI installs it (`.ci/run`), so there a missing etcd fails the test.
    pub async fn start() -> Option<EtcdServer> {
        let Some(binary) = find_etcd() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "etcd is not installed (apt-get install etcd-server)"
            );
            eprintln!("skipped: etcd is not installed (apt-get install etcd-server)");
            return None;
        };
        let mut server = EtcdServer {
            binary,
            dir: tempfile::tempdir().expect("temporary directory"),
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        server.restart().await;
        Some(server)
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd at once (SIGKILL, as a crash) and waits until the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data, and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("log file");
        let child = Command::new(&self.binary)
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={}", self.endpoint()))
            .arg(format!("--advertise-client-urls={}", self.endpoint()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(20)).await;
    }

    async fn wait_ready(&mut self, within: Duration) {
        let start = Instant::now();
        loop {
            let answered = async {
                let mut c = etcd_client::Client::connect([self.endpoint()], None).await?;
                c.get("/", None).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), answered).await {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("etcd exited with {status}: {}", self.log());
            }
            assert!(
                start.elapsed() < within,
                "etcd did not answer within {within:?}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// A client of this server.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None)
            .await
            .expect("etcd client")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn find_etcd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/local/bin".into()])
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}

/// A port free now on 127.0.0.1 (the listener is closed before etcd binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
