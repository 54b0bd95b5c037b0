//! The harness of the nginx differential tests: loopback backends that answer with their own
//! identity, an nginx child process with a generated configuration, an HTTP/1.1 client that can
//! choose its source address, divvy's side of the same requests, and the comparison that reports
//! the first disagreement with its context.
//!
//! Everything listens and connects on 127.0.0.0/8 only, and every wait has a deadline.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use divvy::{Balancer, Context, HealthConfig, PickError, Strategy};

/// How long any single network operation of the harness may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long nginx may take to start accepting.
const START_DEADLINE: Duration = Duration::from_secs(10);

// === nginx binary ===

/// The nginx binary: the first `nginx` on `PATH`, else `/usr/sbin/nginx` (where Debian puts it,
/// often outside a non-root `PATH`).
pub fn nginx_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .map(|dir| dir.join("nginx"))
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
}

/// The nginx binary for the test named `test`. The build script of this crate sets the
/// `nginx_missing` cfg when it finds no nginx, which marks every differential test ignored in the
/// test summary; a test that runs anyway (nginx removed since the build) fails here rather than
/// passing without comparing anything. The suite installs nothing itself: `.ci/run` installs the
/// distribution's `nginx-light` package.
pub fn nginx(test: &str) -> PathBuf {
    nginx_binary().unwrap_or_else(|| {
        panic!(
            "{test}: no nginx binary on PATH or at /usr/sbin/nginx, although there was one when \
             this test was built (install it with `apt-get install nginx-light`)"
        )
    })
}

// === backends ===

/// A set of loopback HTTP backends. Backend `i` answers every HTTP/1.x request with the body
/// `backend-i` and closes the connection; it records nothing.
#[derive(Debug)]
pub struct Backends {
    servers: Vec<Server>,
    by_id: HashMap<String, usize>,
}

#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    /// Accept, read the request and close without answering: a failure nginx sees as
    /// "upstream prematurely closed connection" and counts towards `max_fails`.
    broken: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backends {
    /// Starts `n` backends on 127.0.0.1, each on a port the kernel chose.
    pub fn start(n: usize) -> Self {
        let mut servers = Vec::with_capacity(n);
        let mut by_id = HashMap::new();
        for i in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback backend");
            let addr = listener.local_addr().expect("backend address");
            let broken = Arc::new(AtomicBool::new(false));
            let stop = Arc::new(AtomicBool::new(false));
            let thread = {
                let (broken, stop) = (broken.clone(), stop.clone());
                thread::Builder::new()
                    .name(format!("backend-{i}"))
                    .spawn(move || serve(listener, i, &broken, &stop))
                    .expect("spawn a backend thread")
            };
            by_id.insert(addr.to_string(), i);
            servers.push(Server {
                addr,
                broken,
                stop,
                thread: Some(thread),
            });
        }
        Backends { servers, by_id }
    }

    /// The number of backends.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Backend `i`'s identity: its address as nginx names the server (`127.0.0.1:port`), which is
    /// also divvy's [`Backend`](divvy::Backend) identity.
    pub fn id(&self, i: usize) -> String {
        self.servers[i].addr.to_string()
    }

    /// The index of the backend named `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// Closes backend `i`'s listener: from now on connections to it are refused.
    pub fn stop(&mut self, i: usize) {
        let server = &mut self.servers[i];
        let Some(thread) = server.thread.take() else {
            return;
        };
        server.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; the thread sees the flag and drops the listener.
        let _ = TcpStream::connect_timeout(&server.addr, IO_TIMEOUT);
        thread.join().expect("backend thread");
    }

    /// Whether backend `i` is still listening.
    pub fn is_listening(&self, i: usize) -> bool {
        self.servers[i].thread.is_some()
    }

    /// Makes backend `i` fail every request (close without answering), or serve again.
    pub fn set_broken(&self, i: usize, broken: bool) {
        self.servers[i].broken.store(broken, Ordering::SeqCst);
    }

    /// Whether a request sent to backend `i` now would succeed.
    pub fn serves(&self, i: usize) -> bool {
        self.is_listening(i) && !self.servers[i].broken.load(Ordering::SeqCst)
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.stop(i);
        }
    }
}

fn serve(listener: TcpListener, index: usize, broken: &AtomicBool, stop: &AtomicBool) {
    let body = format!("backend-{index}");
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = conn else { continue };
        // nginx talks HTTP/1.0 to upstreams by default: one request per connection. Errors only
        // end this connection; nginx reports them on its side.
        let _ = answer(&mut stream, &body, broken.load(Ordering::SeqCst));
    }
}

fn answer(stream: &mut TcpStream, body: &str, broken: bool) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    if broken {
        return Ok(());
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

// === nginx ===

/// One `server` line of an upstream block.
pub fn server_line(id: &str, params: &str) -> String {
    if params.is_empty() {
        format!("server {id};\n")
    } else {
        format!("server {id} {params};\n")
    }
}

/// An nginx child process proxying `/` to one upstream. Killed when dropped, also on panic.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    /// Starts nginx with `upstream` as the body of its only upstream block (balancing directive
    /// and `server` lines). One process (`master_process off`), `daemon off`, loopback only, every
    /// path inside a temporary prefix. Each response carries `X-Upstream: $upstream_addr` (every
    /// server tried, in order) and `X-Msec: $msec` (nginx's clock when it answered).
    pub fn start(bin: &Path, upstream: &str) -> Nginx {
        let mut last_log = String::new();
        // A port chosen by binding and releasing can be taken by someone else before nginx binds
        // it; try a few.
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("divvy-nginx-")
                .tempdir()
                .expect("temporary nginx prefix");
            let port = free_port();
            let conf = config(dir.path(), port, upstream);
            let conf_path = dir.path().join("nginx.conf");
            fs::write(&conf_path, conf).expect("write nginx.conf");
            let log = dir.path().join("error.log");
            let child = Command::new(bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf_path)
                .arg("-e")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let mut nginx = Nginx { child, dir, port };
            match nginx.wait_ready() {
                Ok(()) => return nginx,
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!("nginx did not start:\n{log}"),
            }
        }
        panic!("nginx could not bind a free port:\n{last_log}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("nginx exited with {status}\n{}", self.error_log()));
            }
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx did not accept within {START_DEADLINE:?}\n{}",
                    self.error_log()
                ));
            }
            // Bounded polling for readiness.
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Where nginx listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// nginx's error log so far, for failure messages.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// A keepalive client of this nginx from 127.0.0.1.
    pub fn client(&self) -> Client {
        Client::new(self.addr(), None)
    }

    /// A client of this nginx whose connections come from `source` (any 127.0.0.0/8 address).
    pub fn client_from(&self, source: Ipv4Addr) -> Client {
        Client::new(self.addr(), Some(source))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn config(dir: &Path, port: u16, upstream: &str) -> String {
    let d = dir.display();
    let upstream: String = upstream.lines().map(|l| format!("        {l}\n")).collect();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    upstream divvy_compat {{
{upstream}    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://divvy_compat;
            proxy_connect_timeout 2s;
            proxy_send_timeout 5s;
            proxy_read_timeout 5s;
            add_header X-Upstream $upstream_addr always;
            add_header X-Msec $msec always;
        }}
    }}
}}
"#
    )
}

// === client ===

/// A minimal HTTP/1.1 client with keepalive, reconnecting when nginx closes the connection.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    source: Option<Ipv4Addr>,
    conn: Option<BufReader<TcpStream>>,
}

/// What nginx answered.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// `$upstream_addr`: every server nginx tried, in order (or the upstream's name when no
    /// server was available).
    pub upstream: Vec<String>,
    /// nginx's clock (`$msec`) when it answered, in whole seconds.
    pub second: u64,
    /// The body.
    pub body: String,
}

impl Client {
    fn new(addr: SocketAddr, source: Option<Ipv4Addr>) -> Self {
        Client {
            addr,
            source,
            conn: None,
        }
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let stream = match self.source {
            None => TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)?,
            Some(ip) => {
                use socket2::{Domain, Protocol, SockAddr, Socket, Type};
                let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                socket.bind(&SockAddr::from(SocketAddr::from((ip, 0))))?;
                socket.connect_timeout(&SockAddr::from(self.addr), IO_TIMEOUT)?;
                TcpStream::from(socket)
            }
        };
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Sends `GET path` and reads the whole reply.
    pub fn get(&mut self, path: &str) -> io::Result<Reply> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(BufReader::new(self.connect()?)),
        };
        let request = format!("GET {path} HTTP/1.1\r\nHost: divvy-compat\r\n\r\n");
        conn.get_mut().write_all(request.as_bytes())?;
        let (reply, keep) = read_reply(conn)?;
        if !keep {
            self.conn = None;
        }
        Ok(reply)
    }

    /// Sends `GET path`, panicking with nginx's error log on an I/O error.
    pub fn must_get(&mut self, path: &str, nginx: &Nginx) -> Reply {
        self.get(path)
            .unwrap_or_else(|e| panic!("GET {path} failed: {e}\n{}", nginx.error_log()))
    }
}

fn read_reply(conn: &mut BufReader<TcpStream>) -> io::Result<(Reply, bool)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(bad("nginx closed the connection"));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let (mut length, mut upstream, mut second, mut keep) = (None, Vec::new(), 0, true);
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(bad("headers cut short"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').ok_or_else(|| bad("bad header"))?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "x-upstream" => upstream = value.split(", ").map(str::to_owned).collect(),
            "x-msec" => {
                second = value
                    .split('.')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("bad X-Msec"))?;
            }
            "connection" => keep = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let length = length.ok_or_else(|| bad("no Content-Length"))?;
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    let body = String::from_utf8(body).map_err(|_| bad("body is not UTF-8"))?;
    Ok((
        Reply {
            status,
            upstream,
            second,
            body,
        },
        keep,
    ))
}

// === decisions ===

/// One request's routing: the backends tried, in order. The last one answered, unless every
/// try failed or no backend was available (then `answered` is false).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Indices of the backends tried, in order.
    pub tried: Vec<usize>,
    /// Whether a backend answered.
    pub answered: bool,
}

impl Decision {
    /// nginx's decision, from its reply.
    pub fn from_reply(reply: &Reply, backends: &Backends) -> Decision {
        let tried: Vec<usize> = reply
            .upstream
            .iter()
            .filter_map(|a| backends.index_of(a))
            .collect();
        let answered = reply.status == 200;
        if answered {
            // The body names the backend that answered: it must be the last one tried.
            let last = tried.last().copied();
            assert_eq!(
                Some(reply.body.as_str()),
                last.map(|i| format!("backend-{i}")).as_deref(),
                "X-Upstream {:?} disagrees with the body",
                reply.upstream
            );
        }
        Decision { tried, answered }
    }
}

/// The health rules that match nginx: `max_fails` / `fail_timeout` as given, and no panic mode
/// (nginx has none: it never routes to a server it considers failed).
pub fn nginx_health(max_fails: u32, fail_timeout: Duration) -> HealthConfig {
    HealthConfig::builder()
        .max_fails(max_fails)
        .fail_timeout(fail_timeout)
        .panic_threshold(0)
        .build()
}

/// Routes one request with divvy as a proxy with nginx's `proxy_next_upstream error` would:
/// pick; if the backend cannot serve (`serves(i)` is false), report the failure through the pick
/// and pick again excluding every backend tried, as nginx's per-request `tried` bitmap does.
pub fn divvy_route<S: Strategy>(
    lb: &Balancer<S>,
    ctx: Context<'_>,
    backends: &Backends,
    serves: impl Fn(usize) -> bool,
) -> Decision {
    let mut tried = Vec::new();
    let mut keys = Vec::new();
    loop {
        let pick = match lb.pick(&ctx.exclude(&keys)) {
            Ok(pick) => pick,
            Err(PickError::NoneAvailable { .. }) => {
                return Decision {
                    tried,
                    answered: false,
                }
            }
            Err(e) => panic!("unexpected pick error: {e}"),
        };
        let i = backends
            .index_of(pick.backend().id())
            .expect("divvy picked a backend of the set");
        tried.push(i);
        if serves(i) {
            pick.success();
            return Decision {
                tried,
                answered: true,
            };
        }
        keys.push(pick.backend().key());
        pick.failure();
    }
}

/// Asserts that nginx and divvy made the same decision for every input; on the first
/// disagreement, panics with its index, the input, both decisions, the decisions just before it,
/// and how many of the inputs disagree in all.
pub fn assert_agree(
    case: &str,
    inputs: &[String],
    nginx: &[Decision],
    divvy: &[Decision],
    backends: &Backends,
) {
    assert_eq!(nginx.len(), divvy.len(), "{case}: decision counts differ");
    assert_eq!(nginx.len(), inputs.len(), "{case}: one input per decision");
    let Some(first) = (0..nginx.len()).find(|&i| nginx[i] != divvy[i]) else {
        return;
    };
    let total = (0..nginx.len()).filter(|&i| nginx[i] != divvy[i]).count();
    let show = |d: &Decision| {
        let names: Vec<String> = d.tried.iter().map(|i| format!("b{i}")).collect();
        let mut s = names.join("→");
        if !d.answered {
            s.push_str(" ✗");
        }
        s
    };
    let mut msg = format!(
        "{case}: nginx and divvy disagree at request #{first} (input {:?}), \
         {total} of {} requests disagree\n  nginx chose {}\n  divvy chose {}\n  before it (index: nginx | divvy):\n",
        inputs[first],
        nginx.len(),
        show(&nginx[first]),
        show(&divvy[first]),
    );
    for i in first.saturating_sub(8)..first {
        let _ = writeln!(
            msg,
            "    #{i} {:?}: {} | {}",
            inputs[i],
            show(&nginx[i]),
            show(&divvy[i])
        );
    }
    let _ = writeln!(msg, "  backends:");
    for i in 0..backends.len() {
        let _ = writeln!(msg, "    b{i} = {}", backends.id(i));
    }
    panic!("{msg}");
}

// === nginx's clock ===

/// Returns the current second once the clock is well inside it (at least 50 ms past its start,
/// at least 300 ms before its end), so that a request sent now is handled by nginx within the same
/// whole second. Waits at most one second.
pub fn mid_second() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let frac = now.subsec_millis();
    if (50..700).contains(&frac) {
        return now.as_secs();
    }
    // Bounded: less than a second. nginx keeps time in whole seconds, so a request that must be
    // placed in a known second waits for the clock, not for an event.
    let wait = if frac < 50 { 60 - frac } else { 1060 - frac };
    thread::sleep(Duration::from_millis(u64::from(wait)));
    mid_second()
}

/// Waits until the wall clock reaches second `target` (at most `target - now` seconds), then
/// until the middle of a second; returns that second.
pub fn wait_for_second(target: u64) -> u64 {
    loop {
        let s = mid_second();
        if s >= target {
            return s;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970");
        let left = Duration::from_secs(target) - now.min(Duration::from_secs(target));
        thread::sleep(left.min(Duration::from_secs(1)));
    }
}

// === summaries ===

/// What a run of decisions amounts to: how many requests each backend answered, how many tries
/// failed on each, and how many requests no backend answered. For where divvy promises nginx's
/// rules and shares but not its exact order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Backend index → requests it answered.
    pub answered: BTreeMap<usize, usize>,
    /// Backend index → tries that failed on it.
    pub failed: BTreeMap<usize, usize>,
    /// Requests no backend answered.
    pub unanswered: usize,
}

impl Summary {
    /// Sums up `decisions`.
    pub fn of(decisions: &[Decision]) -> Summary {
        let mut s = Summary::default();
        for d in decisions {
            let (last, failed) = match (d.answered, d.tried.split_last()) {
                (true, Some((&last, failed))) => (Some(last), failed),
                _ => (None, &d.tried[..]),
            };
            match last {
                Some(i) => *s.answered.entry(i).or_default() += 1,
                None => s.unanswered += 1,
            }
            for &i in failed {
                *s.failed.entry(i).or_default() += 1;
            }
        }
        s
    }
}

/// Asserts that nginx and divvy failed on the same backends the same number of times, left the
/// same number of requests unanswered, answered from the same backends, and gave each backend a
/// number of requests within `tolerance` of nginx's.
pub fn assert_same_shares(case: &str, nginx: &[Decision], divvy: &[Decision], tolerance: usize) {
    let (n, d) = (Summary::of(nginx), Summary::of(divvy));
    let context = format!("{case}:\n  nginx {n:?}\n  divvy {d:?}");
    assert_eq!(n.failed, d.failed, "{context}\n  failed tries differ");
    assert_eq!(n.unanswered, d.unanswered, "{context}\n  unanswered differ");
    assert!(
        n.answered.keys().eq(d.answered.keys()),
        "{context}\n  the backends that answered differ"
    );
    for (i, &count) in &n.answered {
        let ours = d.answered[i];
        assert!(
            count.abs_diff(ours) <= tolerance,
            "{context}\n  b{i} answered {ours} requests in divvy, {count} in nginx (tolerance {tolerance})"
        );
    }
}
