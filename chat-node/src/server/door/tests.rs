//! Admission at the door, without sockets: per-address and global bounds and the descriptor budget;
//! and, over a loopback socket, the header clock of an accepted socket.

use super::*;
use crate::backend::memory::MemoryBackend;
use crate::hub::Hub;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::node::NodeSettings;

fn node() -> Arc<Node> {
    let hub = Arc::new(Hub::new());
    let metrics = Arc::new(Metrics::new(&hub));
    let backend = Arc::new(MemoryBackend::new(hub.clone(), 10));
    let settings = NodeSettings {
        id: "n1".into(),
        url: "ws://x/ws".into(),
        capacity: 10,
        history_cap: 10,
        limits: Limits::default(),
        auth: Arc::new(crate::auth::Authenticator::Open),
        origins: Default::default(),
    };
    Node::new(settings, hub, backend, metrics)
}

fn door(limits: DoorLimits) -> Arc<Door> {
    Door::new(node(), limits, 100_000)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn unlimited() -> DoorLimits {
    DoorLimits {
        connections_per_ip: 0,
        handshakes_per_ip: 0,
        ..DoorLimits::default()
    }
}

#[tokio::test]
async fn one_address_gets_its_share_of_sockets_and_others_are_unaffected() {
    let d = door(DoorLimits {
        connections_per_ip: 2,
        ..unlimited()
    });
    let a = d.admit(addr("10.0.0.1:1000")).expect("first");
    let _b = d.admit(addr("10.0.0.1:1001")).expect("second");
    assert_eq!(
        d.admit(addr("10.0.0.1:1002")).map(drop),
        Err(Refused::PeerConnections)
    );
    d.admit(addr("10.0.0.2:1000")).expect("another address");
    drop(a);
    d.admit(addr("10.0.0.1:1003")).expect("a slot was freed");
}

#[tokio::test(start_paused = true)]
async fn handshakes_are_rate_limited_per_address_with_a_burst() {
    let d = door(DoorLimits {
        handshakes_per_ip: 2,
        ..unlimited()
    });
    for port in 0..8 {
        drop(
            d.admit(addr(&format!("10.0.0.1:{port}")))
                .expect("the burst"),
        );
    }
    match d.admit(addr("10.0.0.1:9")) {
        Err(Refused::PeerRate(wait)) => assert!(wait <= Duration::from_millis(500)),
        other => panic!("expected a rate refusal, got {other:?}"),
    }
    d.admit(addr("10.0.0.2:9"))
        .expect("other addresses have their own bucket");
    tokio::time::advance(Duration::from_millis(500)).await;
    d.admit(addr("10.0.0.1:10")).expect("a token is due");
}

#[tokio::test]
async fn sockets_not_yet_upgraded_are_capped_globally_and_per_address() {
    let d = door(DoorLimits {
        max_pending: 3,
        ..unlimited()
    });
    let t: Vec<_> = (0..3)
        .map(|i| d.admit(addr(&format!("10.0.0.{i}:1"))).expect("pending"))
        .collect();
    assert_eq!(d.admit(addr("10.0.0.9:1")).map(drop), Err(Refused::Pending));
    d.upgrading(addr("10.0.0.0:1"));
    let _more = d
        .admit(addr("10.0.0.9:1"))
        .expect("an upgrade frees a pending slot");
    drop(t);

    let d = door(DoorLimits {
        connections_per_ip: 1000,
        ..unlimited()
    });
    let held: Vec<_> = (0..PENDING_PER_IP)
        .map(|p| d.admit(addr(&format!("10.0.0.1:{p}"))).expect("pending"))
        .collect();
    assert_eq!(
        d.admit(addr("10.0.0.1:65000")).map(drop),
        Err(Refused::Pending),
        "one address cannot take the whole pending budget"
    );
    d.admit(addr("10.0.0.2:1")).expect("others still get in");
    drop(held);
}

#[tokio::test]
async fn an_ipv6_64_is_one_peer() {
    let d = door(DoorLimits {
        connections_per_ip: 1,
        ..unlimited()
    });
    let _a = d.admit(addr("[2001:db8:1:2::1]:1")).expect("first");
    assert_eq!(
        d.admit(addr("[2001:db8:1:2::ffff]:1")).map(drop),
        Err(Refused::PeerConnections)
    );
    d.admit(addr("[2001:db8:1:3::1]:1")).expect("another /64");
}

#[tokio::test]
async fn the_descriptor_budget_keeps_a_reserve_for_plain_http() {
    let d = Door::new(node(), unlimited(), FD_HEADROOM + HEALTH_RESERVE + 20);
    let at = |i: usize| addr(&format!("10.0.{}.{}:1", i / 200, i % 200));
    let mut upgraded = Vec::new();
    // Each socket is checked once admitted, as `/ws` does.
    let probe = loop {
        let t = d.admit(at(upgraded.len())).expect("inside the budget");
        if !d.upgrades_allowed() {
            break t;
        }
        d.upgrading(at(upgraded.len()));
        upgraded.push(t);
    };
    assert_eq!(upgraded.len(), 20, "upgrades stop where the reserve starts");
    let mut probes = vec![probe];
    for i in 1..HEALTH_RESERVE {
        probes.push(
            d.admit(addr(&format!("10.9.0.{i}:1")))
                .expect("probes use the reserve"),
        );
    }
    assert_eq!(
        d.admit(addr("10.9.9.9:1")).map(drop),
        Err(Refused::Descriptors)
    );
}

#[tokio::test]
async fn an_upgraded_socket_lets_go_of_its_header_clock_at_its_next_read() {
    use axum::serve::Listener as _;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let at = listener.local_addr().expect("address");
    let d = door(unlimited());
    let mut doors = DoorListener::new(listener, d.clone());
    let mut client = TcpStream::connect(at).await.expect("connect");
    let (mut socket, peer) = doors.accept().await;
    assert!(
        socket.holds_header_clock(),
        "a new socket runs on the header clock"
    );

    client.write_all(b"GET").await.expect("client writes");
    let mut buf = [0u8; 16];
    let n = socket
        .read(&mut buf)
        .await
        .expect("read before the upgrade");
    assert_eq!(&buf[..n], b"GET");
    assert!(
        socket.holds_header_clock(),
        "not upgraded yet: the clock stays"
    );

    d.upgrading(peer);
    client.write_all(b"frame").await.expect("client writes");
    let n = socket.read(&mut buf).await.expect("read after the upgrade");
    assert_eq!(&buf[..n], b"frame");
    assert!(
        !socket.holds_header_clock(),
        "upgraded: the clock is dropped"
    );
}
