//! Command-line flags and environment variables of `chat-node`, and the settings derived from them.

use crate::auth::AuthArgs;
use crate::limits::{DoorLimits, Limits};
use std::net::SocketAddr;
use std::time::Duration;
use switchboard_loadset::Membership;
use switchboard_redis::RedisArgs;
use switchboard_runtime::LogArgs;
use switchboard_runtime::duration::within;
use switchboard_runtime::tls::TlsArgs;

/// Direct messages kept per user inbox.
pub const INBOX_CAP: usize = 1000;
/// How long an inbox is kept after its last message.
pub const INBOX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a room's history, sequence and read markers are kept after its last message while
/// nobody is in it (nodes keep rooms with members alive).
pub const ROOM_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a user's last-seen time is kept after their last disconnect.
pub const LAST_SEEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Read markers kept per room: the most advanced ones stay, the least advanced go first.
pub const READ_MARKERS_CAP: usize = 1000;
/// Rooms a standalone node keeps at most; beyond it the least recently used room nobody is in is
/// forgotten.
pub const STANDALONE_ROOMS: usize = 10_000;
/// Direct-message inboxes a standalone node keeps at most (least recently used first out).
pub const STANDALONE_INBOXES: usize = 10_000;
/// Bytes of messages (and resend records) a standalone node keeps in all its rooms and inboxes: a
/// development or small-site server; 256 MiB is some 60 000 of the longest messages, or millions of
/// ordinary ones.
pub const STANDALONE_STORE_BYTES: usize = 256 * 1024 * 1024;
/// Users whose last-seen time and delivery cursor a standalone node keeps at most.
pub const STANDALONE_USERS: usize = 100_000;
/// Users one private room's ACL lists at most: a room for a whole organisation, while `GET` of the list
/// stays one bounded reply. An admin gets `409` beyond it rather than an entry silently dropped.
pub const ROOM_ACL_CAP: usize = 10_000;
/// Rooms with an ACL a standalone node keeps at most (admin-made state is refused, never evicted).
pub const STANDALONE_ACL_ROOMS: usize = 10_000;
/// Correspondents remembered per user (for last-seen visibility), the most recent first.
pub const CONTACTS_CAP: usize = 1000;
/// How long a client id is remembered for deduplication. Long enough for any client to give up
/// resending, short enough that Redis memory stays bounded.
pub const DEDUP_TTL: Duration = Duration::from_secs(24 * 3600);
/// Presence entries expire this long after the last refresh of the node that holds them.
pub const PRESENCE_TTL: Duration = Duration::from_secs(30);
/// How often a node refreshes its presence entries (well inside [`PRESENCE_TTL`]).
pub const PRESENCE_REFRESH: Duration = Duration::from_secs(10);
/// Session starts a node lets talk to the store at once. A start makes a few sequential round trips
/// (subscribe, inbox state, online mark; the replay of missed messages holds no turn); a burst of
/// thousands of connections beyond this waits its turn instead of queueing thousands of commands in
/// the Redis client, whose queue keeps its largest size for the life of the process.
pub const SESSION_STARTS_IN_FLIGHT: usize = 512;
/// Time a client has to send `hello` when it did not give `?user=`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval of WebSocket pings from the node.
pub const PING_INTERVAL: Duration = Duration::from_secs(20);

/// Shortest heartbeat TTL: the heartbeat is sent at a fraction of it, and under a second a busy Redis
/// would drop live nodes from the load set.
pub const MIN_HEARTBEAT_TTL: Duration = Duration::from_secs(1);
/// Longest heartbeat TTL: a dead node should not be offered to clients for longer than this.
pub const MAX_HEARTBEAT_TTL: Duration = Duration::from_secs(10 * 60);
/// Longest drain: Kubernetes' grace period is sized from it, and an hour already outlasts any rollout.
pub const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);
/// Shortest idle timeout: below a second a client cannot answer a ping in time.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest idle timeout: idle connections hold memory; an hour is more than any keepalive needs.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest write delay: beyond a tenth of a second people see the delay, and a fast room fills half a
/// connection's queue (which is written at once) long before it.
pub const MAX_WRITE_DELAY: Duration = Duration::from_millis(100);
/// Shortest header timeout: a client on a slow link needs a moment for its request head.
pub const MIN_HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest header timeout: an idle socket holds a descriptor; five minutes outlasts any proxy.
pub const MAX_HEADER_TIMEOUT: Duration = Duration::from_secs(300);
/// Shortest replica wait: less than a replication round trip on a LAN would never be met.
pub const MIN_ACK_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest replica wait: a sender waits this long for its ack, so beyond a minute it has given up.
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// `chat-node` flags. Every flag also reads the environment variable shown in `--help`.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "chat-node", version, about = "Switchboard socket server")]
pub struct Args {
    /// Address to listen on for WebSocket and HTTP.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// This node's id in the load set (default: $HOSTNAME, else a random id).
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: Option<String>,
    /// Identity of the chat system; all its Redis keys share a prefix derived from it.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_ID", default_value = "default")]
    pub cluster_id: String,
    /// WebSocket URL clients should open to reach this node (default: ws://LISTEN/ws, or wss:// with
    /// --tls-cert-file).
    #[arg(long, env = "SWITCHBOARD_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Most concurrent connections; new sessions beyond it are closed with 1013.
    #[arg(long, env = "SWITCHBOARD_CAPACITY", default_value_t = 10_000)]
    pub capacity: u64,
    /// Who adds and removes this node in the load set: `self` (heartbeat) or `operator` (the operator,
    /// from pod readiness; the node adds itself only while no operator holds the membership lease).
    #[arg(long, env = "SWITCHBOARD_MEMBERSHIP", default_value = "self")]
    pub membership: Membership,
    /// A node that stops beating is no longer assigned this long after its last heartbeat, in both
    /// membership modes (1s to 10m).
    #[arg(
        long,
        env = "SWITCHBOARD_HEARTBEAT_TTL",
        default_value = "3s",
        value_parser = within(MIN_HEARTBEAT_TTL, MAX_HEARTBEAT_TTL)
    )]
    pub heartbeat_ttl: Duration,
    /// How long to drain on SIGTERM before closing the remaining connections with 1012 (0s to 1h).
    #[arg(
        long,
        env = "SWITCHBOARD_DRAIN_TIMEOUT",
        default_value = "10s",
        value_parser = within(Duration::ZERO, MAX_DRAIN_TIMEOUT)
    )]
    pub drain_timeout: Duration,
    /// Reconnect notices per second a draining node sends (10 to 1000000); faster only when needed to
    /// tell every client within the first half of the drain timeout.
    #[arg(
        long,
        env = "SWITCHBOARD_DRAIN_NOTICE_RATE",
        default_value_t = crate::drain::DEFAULT_NOTICE_RATE,
        value_parser = clap::value_parser!(u32).range(
            i64::from(crate::drain::MIN_NOTICE_RATE)..=i64::from(crate::drain::MAX_NOTICE_RATE)
        )
    )]
    pub drain_notice_rate: u32,
    /// Messages kept per room.
    #[arg(long, env = "SWITCHBOARD_HISTORY_CAP", default_value_t = 1000)]
    pub history_cap: usize,
    /// Largest WebSocket message in bytes.
    #[arg(long, env = "SWITCHBOARD_MAX_FRAME_BYTES", default_value_t = 65536)]
    pub max_frame_bytes: usize,
    /// Longest message body in characters.
    #[arg(long, env = "SWITCHBOARD_MAX_BODY_CHARS", default_value_t = 4000)]
    pub max_body_chars: usize,
    /// Sustained frames per second per connection.
    #[arg(long, env = "SWITCHBOARD_RATE_PER_SEC", default_value_t = 20)]
    pub rate_per_sec: u32,
    /// Burst of frames above the sustained rate.
    #[arg(long, env = "SWITCHBOARD_RATE_BURST", default_value_t = 40)]
    pub rate_burst: u32,
    /// Live frames queued towards one client before it is disconnected as a slow consumer (4008);
    /// replies to the client's own requests have as much room again, apart.
    #[arg(long, env = "SWITCHBOARD_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,
    /// Bytes queued towards one client before it is disconnected as a slow consumer (4008); raised
    /// to at least twice the largest reply (a history page).
    #[arg(long, env = "SWITCHBOARD_OUTBOUND_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub outbound_queue_bytes: usize,
    /// A client that sent nothing (no frame, no pong) for this long is closed with 4003 (1s to 1h).
    #[arg(
        long,
        env = "SWITCHBOARD_IDLE_TIMEOUT",
        default_value = "60s",
        value_parser = within(MIN_IDLE_TIMEOUT, MAX_IDLE_TIMEOUT)
    )]
    pub idle_timeout: Duration,
    /// Time a connection holds live events (fan-out) before writing them, so that those arriving
    /// meanwhile leave in one write: fewer system calls per delivery when clients get many messages
    /// each, for up to this much latency (0 to 100ms; 0 writes at once). Replies are never held.
    #[arg(
        long,
        env = "SWITCHBOARD_WRITE_DELAY",
        default_value = "0s",
        value_parser = within(Duration::ZERO, MAX_WRITE_DELAY)
    )]
    pub write_delay: Duration,
    /// Sockets one client address (an IPv4 address or an IPv6 /64) may hold, upgraded or not; more
    /// get `429`. 0 for no limit (behind a proxy every client has the proxy's address).
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP",
        default_value_t = 1000
    )]
    pub max_connections_per_ip: u32,
    /// New sockets per second one client address may open, after a burst of four times as many;
    /// faster ones get `429` with `Retry-After`. 0 for no limit.
    #[arg(long, env = "SWITCHBOARD_HANDSHAKES_PER_IP", default_value_t = 50)]
    pub handshakes_per_ip: u32,
    /// Time a socket has to send each request head (from its accept or its previous response) until
    /// it is upgraded to a WebSocket; later ones are cut (1s to 5m).
    #[arg(
        long,
        env = "SWITCHBOARD_HEADER_TIMEOUT",
        default_value = "10s",
        value_parser = within(MIN_HEADER_TIMEOUT, MAX_HEADER_TIMEOUT)
    )]
    pub header_timeout: Duration,
    /// Sockets not yet upgraded to a WebSocket (handshakes, health checks, idle HTTP keep-alive),
    /// from all clients; more get `503`.
    #[arg(long, env = "SWITCHBOARD_MAX_PENDING_SOCKETS", default_value_t = 1024)]
    pub max_pending_sockets: u32,
    /// Replicas that must confirm each message (Redis `WAIT`) before it is delivered and acknowledged.
    /// 0 acknowledges once the master has it; 1 or more survives the loss of the master.
    #[arg(long, env = "SWITCHBOARD_ACK_REPLICAS", default_value_t = 0)]
    pub ack_replicas: u32,
    /// How long to wait for those replicas before answering `unavailable`, after which the client
    /// resends (10ms to 1m).
    #[arg(
        long,
        env = "SWITCHBOARD_ACK_TIMEOUT",
        default_value = "1s",
        value_parser = within(MIN_ACK_TIMEOUT, MAX_ACK_TIMEOUT)
    )]
    pub ack_timeout: Duration,
    /// Web origins (scheme://host[:port], comma-separated) whose pages may open `/ws`, besides the
    /// serving origin (same host and port as the request). Requests without `Origin` (not a browser)
    /// are allowed; any other origin gets 403 before the upgrade.
    #[arg(
        long = "allowed-origins",
        env = "SWITCHBOARD_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Authentication.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// TLS: serve `https`/`wss` from these files (default: plain HTTP, as behind an ingress).
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Redis connection; absent means standalone (in-process bus and history).
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Metrics: on the main listener, or on `--metrics-listen` alone.
    #[command(flatten)]
    pub metrics: switchboard_runtime::metrics::MetricsArgs,
    /// Attachments: where files are kept and their limits.
    #[command(flatten)]
    pub attachments: switchboard_attachments::AttachmentArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Args {
    /// The limits these flags describe.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes.max(1024),
            max_body_chars: self.max_body_chars.max(1),
            rate_per_sec: self.rate_per_sec.max(1),
            rate_burst: self.rate_burst.max(1),
            outbound_queue: self.outbound_queue.max(8),
            outbound_bytes: self.outbound_queue_bytes,
            idle_timeout: self.idle_timeout,
            write_delay: self.write_delay,
            door: DoorLimits {
                connections_per_ip: self.max_connections_per_ip,
                handshakes_per_ip: self.handshakes_per_ip,
                header_timeout: self.header_timeout,
                max_pending: self.max_pending_sockets.max(1),
            },
            ..Limits::default()
        }
        .normalized()
    }

    /// The node id: the flag, else `$HOSTNAME`, else a random one.
    pub fn resolved_node_id(&self) -> String {
        self.node_id
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| format!("node-{:08x}", fastrand::u32(..)))
    }

    /// The advertised WebSocket URL.
    pub fn resolved_advertise_url(&self) -> String {
        self.advertise_url
            .clone()
            .unwrap_or_else(|| format!("{}://{}/ws", self.tls.websocket_scheme(), self.listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("chat-node").chain(args.iter().copied()))
    }

    #[test]
    fn duration_flags_default_to_the_documented_values() {
        let args = parse(&[]).expect("defaults parse");
        assert_eq!(args.heartbeat_ttl, Duration::from_secs(3));
        assert_eq!(args.drain_timeout, Duration::from_secs(10));
        assert_eq!(args.idle_timeout, Duration::from_secs(60));
        assert_eq!(args.ack_timeout, Duration::from_secs(1));
        assert_eq!(args.limits().idle_timeout, Duration::from_secs(60));
        assert_eq!(args.drain_notice_rate, crate::drain::DEFAULT_NOTICE_RATE);
    }

    #[test]
    fn the_advertised_url_is_wss_when_serving_tls() {
        let plain = parse(&["--listen", "127.0.0.1:9000"]).expect("plain");
        assert_eq!(plain.resolved_advertise_url(), "ws://127.0.0.1:9000/ws");
        let tls = parse(&[
            "--listen",
            "127.0.0.1:9000",
            "--tls-cert-file",
            "tls.crt",
            "--tls-key-file",
            "tls.key",
        ])
        .expect("tls");
        assert_eq!(tls.resolved_advertise_url(), "wss://127.0.0.1:9000/ws");
        assert!(
            parse(&["--tls-cert-file", "tls.crt"]).is_err(),
            "a key is needed too"
        );
    }

    #[test]
    fn drain_notice_rate_is_bounded() {
        assert_eq!(
            parse(&["--drain-notice-rate", "10"])
                .expect("lowest")
                .drain_notice_rate,
            10
        );
        for bad in ["0", "9", "1000001", "-1", "fast"] {
            assert!(
                parse(&["--drain-notice-rate", bad]).is_err(),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn duration_flags_take_a_unit() {
        let args = parse(&[
            "--heartbeat-ttl",
            "2s",
            "--drain-timeout",
            "0s",
            "--idle-timeout",
            "2m",
            "--ack-timeout",
            "250ms",
        ])
        .expect("parse");
        assert_eq!(args.heartbeat_ttl, Duration::from_secs(2));
        assert_eq!(args.drain_timeout, Duration::ZERO);
        assert_eq!(args.idle_timeout, Duration::from_secs(120));
        assert_eq!(args.ack_timeout, Duration::from_millis(250));
    }

    #[test]
    fn bare_numbers_and_out_of_range_durations_are_refused_not_clamped() {
        for bad in [
            ["--idle-timeout", "2"],
            ["--heartbeat-ttl", "500ms"],
            ["--heartbeat-ttl", "11m"],
            ["--drain-timeout", "2h"],
            ["--idle-timeout", "0s"],
            ["--ack-timeout", "5ms"],
            ["--ack-timeout", "2m"],
            ["--header-timeout", "500ms"],
            ["--header-timeout", "6m"],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?} must be refused");
        }
    }
}
