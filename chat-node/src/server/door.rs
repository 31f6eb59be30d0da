//! Bounds at the door: what a socket must pass before the web framework sees it, and the clock a socket
//! runs on until it is upgraded to a WebSocket.
//!
//! ```text
//!  accept ──▶ fd budget left? ──no──▶ 503 ─┐
//!          ├▶ sockets not yet upgraded < --max-pending-sockets (and < PENDING_PER_IP for the peer)? ──no──▶ 503 ─┤
//!          ├▶ peer's sockets < --max-connections-per-ip? ──no──▶ 429 ─┤          (counted and logged
//!          └▶ peer's handshake bucket (--handshakes-per-ip)? ──no──▶ 429 + Retry-After ─┘   as refusals)
//!                 │
//!                 ▼  Guarded socket: a request head within --header-timeout of the accept or of the
//!                    previous response, else cut (header_timeout); an upgrade stops the clock
//! ```
//!
//! A peer is an IPv4 address or an IPv6 /64 (one host's usual allocation). A refused socket gets a
//! short HTTP answer (`429` or `503`, `Connection: close`) after its request head is read — so the
//! client sees why — by at most [`MAX_REFUSING`] tasks at a time; beyond them it is just closed. Behind
//! TLS it is always just closed (counted and logged all the same): the answer would not be TLS.
//!
//! The file-descriptor budget is the soft `RLIMIT_NOFILE` (raised to the hard limit at start-up)
//! minus [`FD_HEADROOM`] for Redis, logs and the listener. Plain HTTP (health checks, metrics) may use
//! the last [`HEALTH_RESERVE`] descriptors of it; WebSocket upgrades may not (`503` before the
//! upgrade), so a node full of sockets still answers its probes.

use crate::limits::{DoorLimits, TokenBucket};
use crate::node::Node;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

/// Descriptors kept out of the socket budget: Redis connections, log files, the listener, the runtime.
pub const FD_HEADROOM: u64 = 64;
/// Descriptors at the end of the budget only plain HTTP requests (probes, metrics) may use.
pub const HEALTH_RESERVE: u64 = 32;
/// Sockets one peer may hold before upgrading (unless `--max-connections-per-ip 0` lifts every
/// per-address bound): a browser opens about six per host, an office behind one NAT a few times that;
/// a flood from one address stops here instead of at the global cap.
pub const PENDING_PER_IP: u32 = 64;
/// Peers tracked at most; beyond it, peers without open sockets are forgotten first.
pub const MAX_TRACKED_PEERS: usize = 65_536;
/// Refused sockets being answered at once; more are closed without an answer.
pub const MAX_REFUSING: usize = 256;
/// A peer without sockets quiet for this long is forgotten first when too many are tracked.
const FORGET_QUIET_PEERS: Duration = Duration::from_secs(60);
/// Longest a refused socket is given to send its request head, and then to take the answer.
const REFUSAL_TIME: Duration = Duration::from_millis(500);

/// Why a socket was refused at the door.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The process is about to run out of file descriptors.
    Descriptors,
    /// Too many sockets not yet upgraded, from everyone or from this peer.
    Pending,
    /// The peer holds too many sockets.
    PeerConnections,
    /// The peer opens sockets too fast; a token is due in this long.
    PeerRate(Duration),
}

impl Refused {
    /// The refusal counter's `reason` label.
    pub fn metric(self) -> &'static str {
        match self {
            Refused::Descriptors => "fd_headroom",
            Refused::Pending => "pending_sockets",
            Refused::PeerConnections => "ip_connections",
            Refused::PeerRate(_) => "ip_handshake_rate",
        }
    }

    /// The HTTP answer: status line, `Retry-After` seconds, and a body a person can act on.
    fn answer(self) -> (&'static str, u64, &'static str) {
        match self {
            Refused::Descriptors => (
                "503 Service Unavailable",
                1,
                "this node is out of connections; ask the registry for another node\n",
            ),
            Refused::Pending => (
                "503 Service Unavailable",
                1,
                "too many connections waiting to be upgraded; retry shortly\n",
            ),
            Refused::PeerConnections => (
                "429 Too Many Requests",
                5,
                "too many connections from your address\n",
            ),
            Refused::PeerRate(wait) => (
                "429 Too Many Requests",
                wait.as_secs().max(1),
                "too many new connections from your address; slow down\n",
            ),
        }
    }
}

/// What the door knows about one peer.
struct Peer {
    open: u32,
    pending: u32,
    bucket: Option<TokenBucket>,
    last: Instant,
}

/// One accepted socket's place at the door; released when the socket closes.
#[derive(Debug)]
pub struct Ticket {
    door: Arc<Door>,
    peer: IpAddr,
    upgraded: AtomicBool,
    /// Requests being answered; the header clock stops meanwhile.
    busy: AtomicU32,
    /// When the next request head must have arrived, in ms since the door's epoch.
    deadline_ms: AtomicU64,
}

impl Ticket {
    fn deadline(&self) -> Instant {
        self.door.epoch + Duration::from_millis(self.deadline_ms.load(Ordering::Acquire))
    }

    fn clock_runs(&self) -> bool {
        !self.upgraded.load(Ordering::Acquire) && self.busy.load(Ordering::Acquire) == 0
    }

    fn restart_clock(&self) {
        let ms = (Instant::now() + self.door.limits.header_timeout)
            .duration_since(self.door.epoch)
            .as_millis() as u64;
        self.deadline_ms.store(ms, Ordering::Release);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let pending = !self.upgraded.load(Ordering::Acquire);
        self.door.release(self.peer, pending);
    }
}

/// The door of one node: counts, per-peer state and the descriptor budget.
pub struct Door {
    limits: DoorLimits,
    node: Arc<Node>,
    epoch: Instant,
    /// Sockets the process may hold (the descriptor budget).
    max_open: u64,
    open: AtomicU64,
    pending: AtomicU32,
    peers: Mutex<HashMap<IpAddr, Peer>>,
    /// Tickets of open sockets by peer address, so a handler can reach its socket's ticket.
    tickets: Mutex<HashMap<SocketAddr, std::sync::Weak<Ticket>>>,
    refusing: Arc<Semaphore>,
}

impl std::fmt::Debug for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Door")
            .field("limits", &self.limits)
            .field("max_open", &self.max_open)
            .finish_non_exhaustive()
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the file-descriptor limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

impl Door {
    /// A door for `node` with `limits`, allowing `fd_limit - FD_HEADROOM` sockets.
    pub fn new(node: Arc<Node>, limits: DoorLimits, fd_limit: u64) -> Arc<Self> {
        let max_open = fd_limit
            .saturating_sub(FD_HEADROOM)
            .max(HEALTH_RESERVE + 16);
        if max_open < node.settings.capacity {
            tracing::warn!(
                fd_limit,
                capacity = node.settings.capacity,
                "the file-descriptor limit allows fewer sockets than --capacity; raise it (ulimit -n)"
            );
        }
        Arc::new(Self {
            limits,
            node,
            epoch: Instant::now(),
            max_open,
            open: AtomicU64::new(0),
            pending: AtomicU32::new(0),
            peers: Mutex::new(HashMap::new()),
            tickets: Mutex::new(HashMap::new()),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
        })
    }

    fn lock_peers(&self) -> MutexGuard<'_, HashMap<IpAddr, Peer>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_tickets(&self) -> MutexGuard<'_, HashMap<SocketAddr, std::sync::Weak<Ticket>>> {
        self.tickets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sockets open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Acquire)
    }

    /// Lets a new socket from `addr` in, or says why not.
    pub fn admit(self: &Arc<Self>, addr: SocketAddr) -> Result<Arc<Ticket>, Refused> {
        if self.open() >= self.max_open {
            return Err(Refused::Descriptors);
        }
        if self.pending.load(Ordering::Acquire) >= self.limits.max_pending {
            return Err(Refused::Pending);
        }
        let ip = registry::api::caller_key(addr.ip());
        let now = Instant::now();
        {
            let mut peers = self.lock_peers();
            if peers.len() >= MAX_TRACKED_PEERS && !peers.contains_key(&ip) {
                // Forget peers without sockets, the long quiet ones first (their buckets are full).
                peers.retain(|_, p| p.open > 0 || now.duration_since(p.last) < FORGET_QUIET_PEERS);
                if peers.len() >= MAX_TRACKED_PEERS {
                    peers.retain(|_, p| p.open > 0);
                }
            }
            let rate = self.limits.handshakes_per_ip;
            let peer = peers.entry(ip).or_insert_with(|| Peer {
                open: 0,
                pending: 0,
                bucket: (rate > 0).then(|| TokenBucket::full_at(rate, rate * 4, now)),
                last: now,
            });
            peer.last = now;
            let per_ip = self.limits.connections_per_ip;
            if per_ip > 0 && peer.open >= per_ip {
                return Err(Refused::PeerConnections);
            }
            if per_ip > 0 && peer.pending >= PENDING_PER_IP.min(per_ip) {
                return Err(Refused::Pending);
            }
            if let Some(bucket) = peer.bucket.as_mut() {
                bucket.take_at(now).map_err(Refused::PeerRate)?;
            }
            peer.open += 1;
            peer.pending += 1;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        self.pending.fetch_add(1, Ordering::AcqRel);
        let ticket = Arc::new(Ticket {
            door: self.clone(),
            peer: ip,
            upgraded: AtomicBool::new(false),
            busy: AtomicU32::new(0),
            deadline_ms: AtomicU64::new(0),
        });
        ticket.restart_clock();
        self.lock_tickets().insert(addr, Arc::downgrade(&ticket));
        Ok(ticket)
    }

    fn release(&self, ip: IpAddr, pending: bool) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        if pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
        let mut peers = self.lock_peers();
        if let Some(p) = peers.get_mut(&ip) {
            p.open = p.open.saturating_sub(1);
            if pending {
                p.pending = p.pending.saturating_sub(1);
            }
        }
    }

    fn ticket(&self, addr: SocketAddr) -> Option<Arc<Ticket>> {
        self.lock_tickets()
            .get(&addr)
            .and_then(std::sync::Weak::upgrade)
    }

    fn forget(&self, addr: SocketAddr, ticket: &Arc<Ticket>) {
        let mut tickets = self.lock_tickets();
        if tickets
            .get(&addr)
            .is_some_and(|t| std::ptr::eq(t.as_ptr(), Arc::as_ptr(ticket)))
        {
            tickets.remove(&addr);
        }
    }

    /// True while a WebSocket upgrade would leave the health reserve intact.
    pub fn upgrades_allowed(&self) -> bool {
        self.open() + HEALTH_RESERVE <= self.max_open
    }

    /// The socket of `addr` is being upgraded: its header clock stops and it no longer counts as
    /// pending.
    pub fn upgrading(&self, addr: SocketAddr) {
        let Some(t) = self.ticket(addr) else { return };
        if !t.upgraded.swap(true, Ordering::AcqRel) {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            if let Some(p) = self.lock_peers().get_mut(&t.peer) {
                p.pending = p.pending.saturating_sub(1);
            }
        }
    }

    /// A request of `addr` is being answered (its header clock stops until [`Door::answered`]).
    pub fn answering(&self, addr: SocketAddr) {
        if let Some(t) = self.ticket(addr) {
            t.busy.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A request of `addr` was answered: the clock for its next request head starts.
    pub fn answered(&self, addr: SocketAddr) {
        if let Some(t) = self.ticket(addr) {
            t.restart_clock();
            t.busy.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Counts a refused socket and answers it in plain HTTP (when few are being answered and
    /// `answer` is set; else it is just closed).
    fn refuse(&self, mut tcp: TcpStream, addr: SocketAddr, why: Refused, answer: bool) {
        let (status, retry, body) = why.answer();
        self.node
            .metrics
            .refusals
            .record(why.metric(), Some(addr), None, body.trim_end());
        if !answer {
            return;
        }
        let Ok(permit) = self.refusing.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let answer = format!(
                "HTTP/1.1 {status}\r\nConnection: close\r\nRetry-After: {retry}\r\n\
                 Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            // Read the request head first (if it comes): closing a socket with unread input
            // resets it, and the client would never see the answer.
            let _ = tokio::time::timeout(REFUSAL_TIME, async {
                let mut head = Vec::with_capacity(1024);
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            let _ = tokio::time::timeout(REFUSAL_TIME, async {
                let _ = tcp.write_all(answer.as_bytes()).await;
                let _ = tcp.shutdown().await;
            })
            .await;
        });
    }
}

/// The listener behind the door.
pub struct DoorListener {
    inner: TcpListener,
    door: Arc<Door>,
    answer_refusals: bool,
}

impl DoorListener {
    /// `inner` guarded by `door`; refused sockets get a plain HTTP answer.
    pub fn new(inner: TcpListener, door: Arc<Door>) -> Self {
        Self {
            inner,
            door,
            answer_refusals: true,
        }
    }

    /// Refused sockets are closed without an answer: a TLS client could not read a plain one.
    pub fn closing_refused(mut self) -> Self {
        self.answer_refusals = false;
        self
    }
}

impl axum::serve::Listener for DoorListener {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((tcp, addr)) => match self.door.admit(addr) {
                    Ok(ticket) => {
                        let sleep = Some(Box::pin(tokio::time::sleep_until(ticket.deadline())));
                        return (
                            Guarded {
                                tcp,
                                addr,
                                ticket,
                                sleep,
                            },
                            addr,
                        );
                    }
                    Err(why) => self.door.refuse(tcp, addr, why, self.answer_refusals),
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    // Out of descriptors despite the budget (something else holds them): wait a
                    // moment for sockets to close. Logged through the rate-limited refusal log.
                    self.door.node.metrics.refusals.record(
                        "accept_failed",
                        None,
                        None,
                        &format!("accept failed: {e}"),
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted socket with its ticket: cut when a request head is late, released when closed.
pub struct Guarded {
    tcp: TcpStream,
    addr: SocketAddr,
    ticket: Arc<Ticket>,
    /// The header clock; dropped at the first read after the upgrade. Kept, it would hold its timer
    /// entry and the waker of the HTTP connection task that last polled it, and so that finished
    /// task's memory (about 2.3 KiB), until the header timeout passed.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Guarded {
    /// The TCP socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// True while the socket holds its header clock (a timer and the waker of the task that last
    /// read it).
    #[cfg(test)]
    fn holds_header_clock(&self) -> bool {
        self.sleep.is_some()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.ticket.door.forget(self.addr, &self.ticket);
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.ticket.clock_runs() {
            let deadline = this.ticket.deadline();
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            if sleep.as_mut().poll(cx).is_ready() {
                let door = &this.ticket.door;
                door.node.metrics.refusals.record(
                    "header_timeout",
                    Some(this.addr),
                    None,
                    "no request head within --header-timeout",
                );
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request head in time",
                )));
            }
        } else if this.sleep.is_some() && this.ticket.upgraded.load(Ordering::Acquire) {
            // Upgraded: the clock never runs again.
            this.sleep = None;
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Middleware: stops a socket's header clock while its request is answered, and restarts it after.
pub async fn track(
    door: Arc<Door>,
    addr: SocketAddr,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    door.answering(addr);
    let response = next.run(request).await;
    door.answered(addr);
    response
}

#[cfg(test)]
mod tests;
