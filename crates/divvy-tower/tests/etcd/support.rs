//! Support for the etcd tests: a relay whose connections the tests cut; the real etcd and the
//! bounded wait come from divvy-test.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use divvy_test::etcd::EtcdServer;
pub use divvy_test::eventually;

/// A TCP relay to an etcd: the discovery under test connects through it, so a test can cut its
/// connection (a partition) while etcd keeps running and changing.
pub struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays 127.0.0.1:<free port> to `target`.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let (c, g) = (cut.clone(), generation.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(SeqCst) {
                    continue; // dropped: the connection is refused, as by a partition
                }
                let mut changed = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = changed.changed() => {}
                    }
                });
            }
        });
        Relay {
            addr,
            cut,
            generation,
            task,
        }
    }

    /// The relay's URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Relays new connections again.
    pub fn mend(&self) {
        self.cut.store(false, SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
