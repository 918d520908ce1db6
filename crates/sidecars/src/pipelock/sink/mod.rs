//! The gateway sink: pipelock holds net-internal's gateway address and audits what is
//! sent to it, so that leaving the bottle without the proxy fails *and* is seen.
//!
//! net-internal is created with `inhibit_ipv4` (see `nodes::network`): Docker still
//! hands every container `default via <first address of the subnet>` but nothing
//! holds that address. At start, while still root with `NET_ADMIN` and
//! `NET_BIND_SERVICE` (and before any thread exists), [`prepare`] finds pipelock's
//! net-internal interface (the one its default route does not leave by: Docker puts a
//! dual-homed container's default route on the network that is not internal), adds
//! the gateway address to it over rtnetlink ([`netlink`]), binds UDP and TCP port 53
//! and the report port there, and then drops to [`bottle_contract::ca::SIDECAR_UID`] for
//! good (`sidecar::privs`). Only then are the config and the CA key read.
//!
//! The agent's DNS server is that address (`nodes::agent_net`, `--dns`): Docker's
//! embedded DNS answers the bottle's own names and forwards every other name to it,
//! from the agent's network namespace. [`spawn`] answers those queries REFUSED at once
//! and logs each as a `deny`/`dns` audit event naming the host. The question is read
//! by a small bounded parser ([`dns`]).
//!
//! Packets the agent sends to an outside address never reach pipelock: Docker drops
//! them in the host's bridge (`--internal`), and the agent's default route leads into
//! agent-net's TUN device anyway (`sidecar::agent_net`). agent-net answers them and
//! sends a copy of each to the report port ([`REPORT_PORT`]); pipelock reads it with
//! the same classifier ([`packet::classify`]) and logs a `deny`/`direct` event (`dns`
//! for port 53). A report is accepted only from the address the packet came from: it
//! says nothing the agent could not have said by sending the packet itself. Every
//! line is deduplicated and rate-capped ([`limit`]).
//!
//! pipelock never routes what reaches it: the container runs with
//! `net.ipv4.ip_forward=0` (`nodes::sidecar`).
//!
//! Outside a bottle (no [`ENV`], or not started as root: tests, benches, a run by
//! hand) nothing of this happens and pipelock runs as before, without the sink.

pub mod dns;
pub mod limit;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::audit::{Audit, Event};
use crate::agent_net::packet;
use crate::netlink;
use crate::privs::{self, PrivError};

pub use bottle_contract::pipelock::GATEWAY_ENV as ENV;
/// DNS messages longer than this are not read.
const MAX_MESSAGE: usize = 4096;
/// TCP queries served at once.
const MAX_TCP: usize = 32;
/// Time a TCP client has to send its query.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
pub use bottle_contract::pipelock::REPORT_PORT;

/// The gateway address, held, with its DNS and report sockets bound (non-blocking).
#[derive(Debug)]
pub struct Gateway {
    pub addr: Ipv4Addr,
    pub udp: std::net::UdpSocket,
    pub tcp: std::net::TcpListener,
    pub subnet: packet::Subnet,
    pub reports: std::net::UdpSocket,
}

/// Why the gateway could not be taken (pipelock then runs without the sink).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error("cannot tell net-internal apart (default routes via {oifs:?}, addresses {addrs:?})")]
    Ambiguous {
        oifs: Vec<u32>,
        addrs: Vec<netlink::IfAddr>,
    },
    #[error("no gateway address in {0:?}")]
    NoGateway(netlink::IfAddr),
    #[error("binding {0}:53: {1}")]
    Bind(Ipv4Addr, std::io::Error),
}

/// Take the gateway (best effort) and drop privileges, when [`ENV`] is set and the
/// process runs as root; otherwise do nothing. Must run before any other thread
/// exists: the uid and gid calls change the calling thread only. An error means the
/// privileges could not be dropped: pipelock must not run.
pub fn prepare() -> Result<Option<Gateway>, PrivError> {
    if std::env::var_os(ENV).is_none() {
        return Ok(None);
    }
    if !privs::is_root() {
        tracing::warn!(
            "pipelock is not root: no gateway sink (names outside the bottle fail unaudited)"
        );
        return Ok(None);
    }
    privs::single_threaded()?;
    let gateway = match take_gateway() {
        Ok(g) => {
            tracing::info!(gateway = %g.addr, "pipelock holds net-internal's gateway: DNS sink on port 53");
            Some(g)
        }
        Err(e) => {
            tracing::warn!(error = %e, "pipelock runs without the gateway sink");
            None
        }
    };
    privs::drop_to_sidecar_user()?;
    Ok(gateway)
}

fn take_gateway() -> Result<Gateway, GatewayError> {
    let mut route = netlink::Route::open()?;
    let oifs = route.default_oifs()?;
    let addrs = route.addrs()?;
    let inside = netlink::internal_interface(&oifs, &addrs)
        .ok_or(GatewayError::Ambiguous { oifs, addrs })?;
    let gw = netlink::gateway_of(inside).ok_or(GatewayError::NoGateway(inside))?;
    route.add_addr(gw)?;
    let bind_err = |e| GatewayError::Bind(gw.addr, e);
    let udp = std::net::UdpSocket::bind((gw.addr, 53)).map_err(bind_err)?;
    udp.set_nonblocking(true).map_err(bind_err)?;
    let tcp = std::net::TcpListener::bind((gw.addr, 53)).map_err(bind_err)?;
    tcp.set_nonblocking(true).map_err(bind_err)?;
    let subnet = packet::Subnet::of(inside);
    let reports = std::net::UdpSocket::bind((gw.addr, REPORT_PORT)).map_err(bind_err)?;
    reports.set_nonblocking(true).map_err(bind_err)?;
    Ok(Gateway {
        addr: gw.addr,
        udp,
        tcp,
        subnet,
        reports,
    })
}

/// The clock the sink's limiter reads (time as data: tests give a fixed one).
type Clock = Box<dyn Fn() -> Instant + Send + Sync>;

/// The audit side of the sink, shared by its tasks.
pub struct Sink {
    audit: Arc<dyn Audit>,
    limiter: Mutex<limit::Limiter>,
    now: Clock,
}

impl Sink {
    pub fn new(audit: Arc<dyn Audit>) -> Sink {
        Sink::with_clock(audit, Box::new(Instant::now))
    }

    /// A sink whose limiter reads `now` for the time.
    fn with_clock(audit: Arc<dyn Audit>, now: Clock) -> Sink {
        Sink {
            audit,
            limiter: Mutex::new(limit::Limiter::default()),
            now,
        }
    }

    /// Audit one query (or unreadable message) from `from` over `proto`.
    pub fn record(&self, proto: &str, from: IpAddr, query: Result<&dns::Query, dns::DnsError>) {
        let key = match query {
            Ok(q) => format!("{proto} {from} {} {}", q.name, q.qtype),
            Err(e) => format!("{proto} {from} ? {e}"),
        };
        self.emit(&key, || dns_event(proto, from, query));
    }

    /// Audit one packet that tried to leave without the proxy.
    pub fn record_attempt(&self, a: &packet::Attempt) {
        let key = format!(
            "{} {} {} {} {}",
            a.proto.as_str(),
            a.src,
            a.dst,
            a.port,
            a.name.as_deref().unwrap_or("")
        );
        self.emit(&key, || attempt_event(a));
    }

    fn emit(&self, key: &str, event: impl FnOnce() -> Event) {
        let admitted = match self.limiter.lock() {
            Ok(mut l) => l.admit(key, (self.now)()),
            Err(_) => false,
        };
        if admitted {
            self.audit.record(event());
        }
    }

    /// Report what was held back (called every [`limit::REPORT`]).
    fn flush(&self) {
        let held_back = match self.limiter.lock() {
            Ok(mut l) => l.flush((self.now)()),
            Err(_) => None,
        };
        if let Some(n) = held_back {
            self.audit.record(suppressed(n));
        }
    }
}

/// The audit event of one query that reached the sink.
pub fn dns_event(proto: &str, from: IpAddr, query: Result<&dns::Query, dns::DnsError>) -> Event {
    let mut reason = "dns";
    let (host, detail) = match query {
        Ok(q) => (
            q.name.clone(),
            match dns::encoded(q) {
                // The host is written with those labels hashed (`Event::scrubbed`).
                Some(why) => {
                    reason = "host-label-encoded";
                    format!(
                        "DNS query (type {}, {proto}, from {from}) for a name that looks like it \
                     carries data ({why}): refused, nothing resolves here",
                        q.qtype
                    )
                }
                None => format!(
                    "DNS query (type {}, {proto}, from {from}) for a name outside the bottle: \
                 refused, nothing resolves here and nothing leaves without the proxy; \
                 use HTTPS_PROXY, or ask for the host with supervise's egress-block",
                    q.qtype
                ),
            },
        ),
        Err(e) => (
            String::new(),
            format!("unreadable DNS message ({proto}, from {from}): {e}"),
        ),
    };
    Event {
        decision: "deny",
        reason,
        method: "DNS".into(),
        host,
        port: 53,
        detail: Some(detail),
        ..Default::default()
    }
}

/// The audit event of one packet sent past the proxy.
pub fn attempt_event(a: &packet::Attempt) -> Event {
    let dns = a.port == 53 && a.proto != packet::Proto::Icmp;
    let what = match a.proto {
        packet::Proto::Tcp => "TCP connect",
        packet::Proto::Udp => "UDP datagram",
        packet::Proto::Icmp => "ICMP echo",
    };
    let to = match a.proto {
        packet::Proto::Icmp => a.dst.to_string(),
        _ => format!("{}:{}", a.dst, a.port),
    };
    Event {
        decision: "deny",
        reason: if dns { "dns" } else { "direct" },
        method: a.proto.as_str().to_ascii_uppercase(),
        host: a.name.clone().unwrap_or_else(|| a.dst.to_string()),
        port: a.port,
        detail: Some(format!(
            "{what} from {} to {to} bypassed the proxy: refused at once, nothing is routed; \
             use HTTPS_PROXY, or ask for the host with supervise's egress-block",
            a.src
        )),
        ..Default::default()
    }
}

fn suppressed(n: u64) -> Event {
    Event {
        decision: "deny",
        reason: "suppressed",
        detail: Some(format!(
            "{n} more attempts not logged (repeats within {}s, or over {} lines a second)",
            limit::DEDUPE.as_secs(),
            limit::PER_SECOND
        )),
        ..Default::default()
    }
}

/// Serve the sink on `gw`'s sockets until the process ends, on tasks.
pub fn spawn(gw: Gateway, sink: Arc<Sink>) -> std::io::Result<()> {
    let udp = tokio::net::UdpSocket::from_std(gw.udp)?;
    let tcp = tokio::net::TcpListener::from_std(gw.tcp)?;
    let reports = tokio::net::UdpSocket::from_std(gw.reports)?;
    tokio::spawn(serve_reports(reports, gw.subnet, sink.clone()));
    tokio::spawn(serve_udp(udp, sink.clone()));
    tokio::spawn(serve_tcp(tcp, sink.clone()));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(limit::REPORT);
        loop {
            tick.tick().await;
            sink.flush();
        }
    });
    Ok(())
}

/// Audit each attempt agent-net reports (a copy of the packet, see [`REPORT_PORT`]):
/// one that is not an attempt, or that did not come from its own sender, is ignored.
pub async fn serve_reports(sock: tokio::net::UdpSocket, subnet: packet::Subnet, sink: Arc<Sink>) {
    let mut buf = vec![0u8; packet::SNAP];
    loop {
        let (n, from) = recv(&sock, &mut buf, "report sink").await;
        if let Some(a) = packet::classify(&buf[..n], subnet)
            && IpAddr::V4(a.src) == from.ip()
        {
            sink.record_attempt(&a);
        }
    }
}

/// The next datagram on `sock`; a failed receive is logged and retried shortly.
async fn recv(
    sock: &tokio::net::UdpSocket,
    buf: &mut [u8],
    what: &str,
) -> (usize, std::net::SocketAddr) {
    loop {
        match sock.recv_from(buf).await {
            Ok(r) => return r,
            Err(e) => {
                tracing::debug!(error = %e, "{what}: receive");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Answer every UDP query REFUSED, and audit it.
pub async fn serve_udp(sock: tokio::net::UdpSocket, sink: Arc<Sink>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, from) = recv(&sock, &mut buf, "dns sink").await;
        let msg = &buf[..n];
        let query = dns::parse_query(msg);
        sink.record("udp", from.ip(), query.as_ref().map_err(|e| *e));
        if let Ok(q) = &query {
            let _ = sock.send_to(&dns::refused(msg, q), from).await;
        }
    }
}

/// Answer every TCP query REFUSED (one per connection), and audit it.
pub async fn serve_tcp(listener: tokio::net::TcpListener, sink: Arc<Sink>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    loop {
        let (mut conn, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "dns sink: accept");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Over the limit: the connection is closed unread.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let sink = sink.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(TCP_TIMEOUT, async {
                let len = usize::from(conn.read_u16().await?);
                if len > MAX_MESSAGE {
                    sink.record("tcp", from.ip(), Err(dns::DnsError::NameTooLong));
                    return Ok::<_, std::io::Error>(());
                }
                let mut msg = vec![0u8; len];
                conn.read_exact(&mut msg).await?;
                let query = dns::parse_query(&msg);
                sink.record("tcp", from.ip(), query.as_ref().map_err(|e| *e));
                if let Ok(q) = &query {
                    let answer = dns::refused(&msg, q);
                    let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&answer);
                    conn.write_all(&framed).await?;
                }
                Ok(())
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipelock::audit::MemoryAudit;

    #[tokio::test]
    async fn udp_and_tcp_queries_are_refused_and_audited_once() {
        let audit = Arc::new(MemoryAudit::default());
        let sink = Arc::new(Sink::new(audit.clone()));
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("udp");
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("tcp");
        let (udp_addr, tcp_addr) = (udp.local_addr().expect("a"), tcp.local_addr().expect("a"));
        tokio::spawn(serve_udp(udp, sink.clone()));
        tokio::spawn(serve_tcp(tcp, sink.clone()));

        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("c");
        let q = dns::tests::query(42, "example.com");
        let mut buf = [0u8; 512];
        for _ in 0..3 {
            client.send_to(&q, udp_addr).await.expect("send");
            let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
                .await
                .expect("answered")
                .expect("recv");
            assert_eq!(&buf[..2], &[0, 42]);
            assert_eq!(buf[3] & 0x0F, 5, "REFUSED");
            assert_eq!(n, q.len());
        }

        let mut conn = tokio::net::TcpStream::connect(tcp_addr).await.expect("tcp");
        let q = dns::tests::query(7, "pypi.org");
        conn.write_u16(q.len() as u16).await.expect("len");
        conn.write_all(&q).await.expect("query");
        let len = conn.read_u16().await.expect("answer len");
        let mut answer = vec![0u8; usize::from(len)];
        conn.read_exact(&mut answer).await.expect("answer");
        assert_eq!(answer[3] & 0x0F, 5, "REFUSED");

        let events = audit.events();
        let hosts: Vec<(&str, &str, &str)> = events
            .iter()
            .map(|e| (e.decision, e.reason, e.host.as_str()))
            .collect();
        assert_eq!(
            hosts,
            [("deny", "dns", "example.com"), ("deny", "dns", "pypi.org")],
            "repeats are deduplicated"
        );
        sink.flush();
        let events = audit.events();
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].reason, "suppressed");
        assert!(
            events[2]
                .detail
                .as_deref()
                .is_some_and(|d| d.starts_with("2 more")),
            "{events:?}"
        );
        assert!(
            events[0]
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("egress-block"))
        );
    }

    #[tokio::test]
    async fn a_report_is_audited_only_from_the_sender_of_its_packet() {
        let audit = Arc::new(MemoryAudit::default());
        let sink = Arc::new(Sink::new(audit.clone()));
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let at = sock.local_addr().expect("addr");
        let subnet = packet::Subnet {
            net: Ipv4Addr::new(127, 0, 0, 0),
            prefix: 8,
        };
        tokio::spawn(serve_reports(sock, subnet, sink));
        let syn = |src: [u8; 4], dst: [u8; 4]| {
            let mut p = Vec::new();
            etherparse::PacketBuilder::ipv4(src, dst, 64)
                .tcp(40000, 443, 1, 1024)
                .syn()
                .write(&mut p, &[])
                .expect("packet");
            p
        };
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("c");
        // Someone else's packet, then one that is not an attempt, then its own.
        client
            .send_to(&syn([127, 0, 0, 9], [1, 1, 1, 1]), at)
            .await
            .expect("send");
        client.send_to(b"\x45junk", at).await.expect("send");
        client
            .send_to(&syn([127, 0, 0, 1], [93, 184, 216, 34]), at)
            .await
            .expect("send");
        for _ in 0..100 {
            if !audit.events().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // One task reads the datagrams in order: the first two were read and ignored.
        let hosts: Vec<(&str, String)> = audit
            .events()
            .iter()
            .map(|e| (e.reason, e.host.clone()))
            .collect();
        assert_eq!(hosts, [("direct", "93.184.216.34".to_string())]);
    }

    #[test]
    fn a_direct_attempt_names_its_destination() {
        let a = packet::Attempt {
            proto: packet::Proto::Tcp,
            src: Ipv4Addr::new(172, 19, 0, 3),
            dst: Ipv4Addr::new(93, 184, 216, 34),
            port: 443,
            name: None,
        };
        let e = attempt_event(&a);
        assert_eq!(
            (e.decision, e.reason, e.method.as_str()),
            ("deny", "direct", "TCP")
        );
        assert_eq!((e.host.as_str(), e.port), ("93.184.216.34", 443));
        assert!(
            e.detail
                .as_deref()
                .is_some_and(|d| d.contains("bypassed the proxy"))
        );
        let q = packet::Attempt {
            proto: packet::Proto::Udp,
            port: 53,
            name: Some("example.com".into()),
            ..a
        };
        let e = attempt_event(&q);
        assert_eq!((e.reason, e.host.as_str()), ("dns", "example.com"));
    }

    #[test]
    fn held_back_attempts_are_counted_in_one_line() {
        // The sink's clock is data here: a loop that crossed a second of the wall clock
        // wrote more than a second's lines and made this test fail now and then.
        let audit = Arc::new(MemoryAudit::default());
        let t0 = Instant::now();
        let at = Arc::new(Mutex::new(t0));
        let clock = at.clone();
        let sink = Sink::with_clock(audit.clone(), Box::new(move || *clock.lock().unwrap()));
        let from = IpAddr::from([172, 19, 0, 3]);
        for i in 0..(limit::PER_SECOND + 50) {
            let q = dns::parse_query(&dns::tests::query(1, &format!("h{i}.test"))).expect("q");
            sink.record("udp", from, Ok(&q));
        }
        let events = audit.events();
        assert_eq!(events.len(), limit::PER_SECOND as usize);
        // Within the same second nothing more is written; the count comes later.
        sink.flush();
        assert_eq!(audit.events().len(), limit::PER_SECOND as usize);
        *at.lock().unwrap() = t0 + limit::REPORT;
        sink.flush();
        let events = audit.events();
        assert_eq!(events.len(), limit::PER_SECOND as usize + 1);
        let last = events.last().expect("the count");
        assert_eq!(last.reason, "suppressed");
        assert!(
            last.detail
                .as_deref()
                .is_some_and(|d| d.starts_with("50 more")),
            "{:?}",
            last.detail
        );
    }

    #[test]
    fn prepare_does_nothing_outside_a_bottle() {
        // The test environment never sets the variable.
        if std::env::var_os(ENV).is_none() {
            assert!(matches!(prepare(), Ok(None)));
        }
    }
}
