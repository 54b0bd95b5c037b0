//! Shared helpers for the discovery tests: an authoritative DNS server on loopback (hickory-server,
//! in process) whose records the tests change while discovery runs, and a failure switch.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::authority::{AuthorityObject, Catalog, MessageResponseBuilder, ZoneType};
use hickory_server::proto::op::{Header, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType, RrKey};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryAuthority;
use hickory_server::ServerFuture;
use tokio::net::{TcpListener, UdpSocket};

pub use divvy_test::eventually;

/// The zone every test name lives in.
pub const ZONE: &str = "svc.test.";

/// An authoritative server for [`ZONE`] on 127.0.0.1 (UDP and TCP, one ephemeral port).
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<InMemoryAuthority>,
    servfail: Arc<AtomicBool>,
    serial: AtomicU32,
    _server: ServerFuture<Handler>,
}

/// Answers from the zone, or `SERVFAIL` to everything while the switch is on.
struct Handler {
    catalog: Catalog,
    servfail: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        if !self.servfail.load(SeqCst) {
            return self.catalog.handle_request(request, response).await;
        }
        let msg = MessageResponseBuilder::from_message_request(request)
            .error_msg(request.header(), ResponseCode::ServFail);
        match response.send_response(msg).await {
            Ok(info) => info,
            Err(_) => {
                let mut header = Header::new();
                header.set_response_code(ResponseCode::ServFail);
                header.into()
            }
        }
    }
}

/// A UDP socket and a TCP listener on the same ephemeral port (DNS answers too large for UDP
/// are asked again over TCP). The port the kernel picks for UDP may be taken for TCP: try again.
async fn bind_udp_and_tcp() -> (UdpSocket, TcpListener, SocketAddr) {
    for _ in 0..64 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp, addr);
        }
    }
    panic!("no port free for both udp and tcp on 127.0.0.1");
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

impl DnsServer {
    /// Serves an empty zone (just its SOA, whose negative TTL is 0 so nothing caches "no such
    /// record").
    pub async fn start() -> Self {
        let origin = name(ZONE);
        let zone = Arc::new(InMemoryAuthority::empty(
            origin.clone(),
            ZoneType::Primary,
            false,
        ));
        let soa = SOA::new(
            name("ns.svc.test."),
            name("admin.svc.test."),
            1,
            3600,
            600,
            86400,
            0,
        );
        assert!(
            zone.upsert(Record::from_rdata(origin.clone(), 3600, RData::SOA(soa)), 1)
                .await
        );
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&origin),
            vec![zone.clone() as Arc<dyn AuthorityObject>],
        );
        let servfail = Arc::new(AtomicBool::new(false));
        let (udp, tcp, addr) = bind_udp_and_tcp().await;
        let mut server = ServerFuture::new(Handler {
            catalog,
            servfail: servfail.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5));
        DnsServer {
            addr,
            zone,
            servfail,
            serial: AtomicU32::new(1),
            _server: server,
        }
    }

    /// Replaces the A and AAAA records of `host` with `ips`, each with `ttl` seconds.
    pub async fn set_addrs(&self, host: &str, ttl: u32, ips: &[&str]) {
        self.clear(host, RecordType::A).await;
        self.clear(host, RecordType::AAAA).await;
        for ip in ips {
            let rdata = match ip.parse::<IpAddr>().unwrap() {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            };
            self.upsert(Record::from_rdata(name(host), ttl, rdata))
                .await;
        }
    }

    /// Replaces the SRV records of `service` with `(priority, weight, port, target)`.
    pub async fn set_srv(&self, service: &str, ttl: u32, records: &[(u16, u16, u16, &str)]) {
        self.clear(service, RecordType::SRV).await;
        for &(priority, weight, port, target) in records {
            let srv = SRV::new(priority, weight, port, name(target));
            self.upsert(Record::from_rdata(name(service), ttl, RData::SRV(srv)))
                .await;
        }
    }

    /// Removes every record of `rtype` at `host`: queries then get an authoritative empty answer.
    pub async fn clear(&self, host: &str, rtype: RecordType) {
        let key = RrKey::new(LowerName::new(&name(host)), rtype);
        self.zone.records_mut().await.remove(&key);
    }

    /// While on, every query is answered `SERVFAIL`.
    pub fn servfail(&self, on: bool) {
        self.servfail.store(on, SeqCst);
    }

    async fn upsert(&self, record: Record) {
        let serial = self.serial.fetch_add(1, SeqCst) + 1;
        assert!(self.zone.upsert(record, serial).await);
    }
}
