//! [`ChatClient`]: one WebSocket to a node, the buffering reader every wait goes through, and the
//! request helpers (`join`, `send`, `dm`, `history`, ...) that send a frame with a fresh `req` and
//! wait for the reply carrying it.
//!
//! ```text
//!   request ──send_frame(req=N)──▶ node
//!   wait_for_named(req == N) ◀── read_socket ◀── node   (other frames ──▶ buffer, read first later)
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::frames::{
    Ack, DirectMessage, DmAck, Frame, HistoryPage, Joined, LastSeen, RoomMessage, frame_type,
    parse, server_error,
};
use super::registry::{Assignment, assign};
use super::{ABNORMAL_CLOSE, DEFAULT_TIMEOUT, Error, Result};

/// Bytes read from the socket at most per read: a few frames. The default (128 KiB) is zero-filled
/// before each read, which costs more than the read when frames are small and arrive one by one.
const READ_BUFFER: usize = 8 * 1024;

/// Options for [`ChatClient::connect_with`].
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// User name, sent as `?user=`; `None` opens the socket without identity (send `hello` yourself).
    pub user: Option<String>,
    /// `dm_since` query parameter.
    pub dm_since: Option<u64>,
    /// Kernel receive buffer size for the socket (small values make a slow consumer quickly).
    pub recv_buffer: Option<u32>,
    /// Token sent in a first `hello` frame (token mode); the URL then carries no user.
    pub token: Option<String>,
    /// `Origin` header of the upgrade request (what a browser would send).
    pub origin: Option<String>,
    /// Wait for `welcome` before returning (only meaningful with `user` or `token`).
    pub wait_welcome: bool,
}

/// The client's WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket chat connection with buffered, deadline-bound reads.
pub struct ChatClient {
    ws: Ws,
    url: String,
    user: Option<String>,
    welcome: Option<Frame>,
    buffer: VecDeque<Frame>,
    closed: Option<(u16, String)>,
    next_req: u64,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("buffered", &self.buffer.len())
            .field("closed", &self.closed)
            .finish()
    }
}

/// Append `key=value` to a URL's query string.
fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

/// `host:port` of a `ws://host:port/path` URL.
fn host_port(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("ws://")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Some(&rest[..end])
}

impl ChatClient {
    /// Open `ws_url?user=USER` and wait for `welcome`. A close instead of `welcome` is [`Error::Closed`].
    pub async fn connect(ws_url: &str, user: &str) -> Result<Self> {
        Self::connect_with(
            ws_url,
            ConnectOptions {
                user: Some(user.to_owned()),
                wait_welcome: true,
                ..Default::default()
            },
        )
        .await
    }

    /// Ask the registry for a node, then [`connect`](Self::connect) to it.
    pub async fn connect_assigned(
        registry_base_url: &str,
        user: &str,
    ) -> Result<(Self, Assignment)> {
        let assignment = assign(registry_base_url).await?;
        let client = Self::connect(&assignment.url, user).await?;
        Ok((client, assignment))
    }

    /// Open the WebSocket without giving an identity (no `?user=`): the first frame must be `hello`.
    pub async fn open(ws_url: &str) -> Result<Self> {
        Self::connect_with(ws_url, ConnectOptions::default()).await
    }

    /// Open `ws_url`, send `hello {token}` and wait for `welcome` (token mode).
    pub async fn connect_token(ws_url: &str, token: &str) -> Result<Self> {
        Self::connect_with(
            ws_url,
            ConnectOptions {
                token: Some(token.to_owned()),
                wait_welcome: true,
                ..Default::default()
            },
        )
        .await
    }

    /// Open a connection with explicit options.
    pub async fn connect_with(ws_url: &str, options: ConnectOptions) -> Result<Self> {
        let mut url = ws_url.to_owned();
        if let Some(user) = &options.user {
            url = with_query(&url, "user", user);
        }
        if let (Some(since), None) = (options.dm_since, &options.token) {
            url = with_query(&url, "dm_since", &since.to_string());
        }
        let addr = host_port(&url).ok_or_else(|| Error::BadUrl(url.clone()))?;
        let addr: std::net::SocketAddr = tokio::net::lookup_host(addr)
            .await
            .map_err(|source| Error::Socket {
                url: url.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| Error::BadUrl(url.clone()))?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|source| Error::Socket {
            url: url.clone(),
            source,
        })?;
        if let Some(size) = options.recv_buffer {
            socket
                .set_recv_buffer_size(size)
                .map_err(|source| Error::Socket {
                    url: url.clone(),
                    source,
                })?;
        }
        let stream = tokio::time::timeout(DEFAULT_TIMEOUT, socket.connect(addr))
            .await
            .map_err(|_| Error::Timeout {
                after: DEFAULT_TIMEOUT,
                what: format!("TCP connect to {addr}"),
            })?
            .map_err(|source| Error::Socket {
                url: url.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|source| Error::Connect {
                url: url.clone(),
                source,
            })?;
        if let Some(origin) = &options.origin {
            let value = origin.parse().map_err(|_| Error::BadUrl(origin.clone()))?;
            request.headers_mut().insert("origin", value);
        }
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let handshake = tokio_tungstenite::client_async_with_config(
            request,
            MaybeTlsStream::Plain(stream),
            Some(config),
        );
        let (ws, _response) = tokio::time::timeout(DEFAULT_TIMEOUT, handshake)
            .await
            .map_err(|_| Error::Timeout {
                after: DEFAULT_TIMEOUT,
                what: format!("handshake with {url}"),
            })?
            .map_err(|source| match source {
                tungstenite::Error::Http(response) => Error::Refused {
                    url: url.clone(),
                    status: response.status().as_u16(),
                },
                source => Error::Connect {
                    url: url.clone(),
                    source,
                },
            })?;
        let mut client = ChatClient {
            ws,
            url,
            user: options.user.clone(),
            welcome: None,
            buffer: VecDeque::new(),
            closed: None,
            next_req: 1,
        };
        if let Some(token) = &options.token {
            let mut hello = json!({"type": "hello", "token": token});
            if let Some(since) = options.dm_since {
                hello["dm_since"] = since.into();
            }
            client.send_frame(&hello).await?;
        }
        if (options.user.is_some() || options.token.is_some()) && options.wait_welcome {
            let welcome = client.expect_type("welcome", DEFAULT_TIMEOUT).await?;
            if let Some(user) = welcome.get("user").and_then(|u| u.as_str()) {
                client.user = Some(user.to_owned());
            }
            client.welcome = Some(welcome);
        }
        Ok(client)
    }

    /// The WebSocket itself (identified, welcome read), for tests that drive it frame by frame — or
    /// stop reading it.
    pub fn into_inner(self) -> Ws {
        self.ws
    }

    /// The URL this client opened (with its query).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The user name given on connect, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The `welcome` frame, once received through [`connect`](Self::connect) or [`hello`](Self::hello).
    pub fn welcome(&self) -> Option<&Frame> {
        self.welcome.as_ref()
    }

    /// The node id named in `welcome`.
    pub fn node(&self) -> Option<&str> {
        self.welcome.as_ref()?.get("node")?.as_str()
    }

    /// The close code and reason, once the connection has closed.
    pub fn closed(&self) -> Option<(u16, String)> {
        self.closed.clone()
    }

    /// Frames read but not yet handed out.
    pub fn buffered(&self) -> &VecDeque<Frame> {
        &self.buffer
    }

    /// Take every buffered frame.
    pub fn take_buffered(&mut self) -> Vec<Frame> {
        self.buffer.drain(..).collect()
    }

    /// A fresh request id.
    pub fn next_req(&mut self) -> u64 {
        let req = self.next_req;
        self.next_req += 1;
        req
    }

    // ---------------------------------------------------------------- sending

    /// Send one JSON frame as a text message.
    pub async fn send_frame(&mut self, frame: &Frame) -> Result<()> {
        self.send_text(frame.to_string()).await
    }

    /// Send raw text (for malformed-frame tests).
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<()> {
        let text: String = text.into();
        self.ws.send(Message::text(text)).await.map_err(Error::Ws)
    }

    /// Send a binary message (the protocol refuses them).
    pub async fn send_binary(&mut self, data: Vec<u8>) -> Result<()> {
        self.ws.send(Message::binary(data)).await.map_err(Error::Ws)
    }

    /// Send a frame with a fresh `req` and wait for the reply carrying it (an `error` reply included).
    pub async fn request(&mut self, mut frame: Frame, timeout: Duration) -> Result<Frame> {
        let req = self.next_req();
        if let Some(object) = frame.as_object_mut() {
            object.insert("req".into(), json!(req));
        }
        let what = format!("reply to {}", frame);
        self.send_frame(&frame).await?;
        self.wait_for_named(
            &what,
            |f| f.get("req").and_then(Value::as_u64) == Some(req),
            timeout,
        )
        .await
    }

    /// Like [`request`](Self::request), but an `error` reply becomes [`Error::Server`] and any other
    /// reply must have type `want`.
    async fn call(&mut self, frame: Frame, want: &str) -> Result<Frame> {
        let reply = self.request(frame, DEFAULT_TIMEOUT).await?;
        match frame_type(&reply) {
            Some(t) if t == want => Ok(reply),
            Some("error") => Err(server_error(reply)),
            _ => Err(Error::Unexpected(format!("expected {want}, got {reply}"))),
        }
    }

    /// Send `hello` (for connections opened without `?user=`) and wait for `welcome`.
    pub async fn hello(&mut self, user: &str, dm_since: Option<u64>) -> Result<Frame> {
        let mut frame = json!({"type": "hello", "user": user});
        if let Some(since) = dm_since {
            frame["dm_since"] = json!(since);
        }
        self.send_frame(&frame).await?;
        let welcome = self
            .wait_for_named(
                "welcome",
                |f| matches!(frame_type(f), Some("welcome") | Some("error")),
                DEFAULT_TIMEOUT,
            )
            .await?;
        if frame_type(&welcome) == Some("error") {
            return Err(server_error(welcome));
        }
        self.user = Some(user.to_owned());
        self.welcome = Some(welcome.clone());
        Ok(welcome)
    }

    /// Send `hello` with a token (token mode) and wait for `welcome`; the user is the token's `sub`.
    pub async fn hello_token(&mut self, token: &str) -> Result<Frame> {
        self.send_frame(&json!({"type": "hello", "token": token}))
            .await?;
        let welcome = self.expect_type("welcome", DEFAULT_TIMEOUT).await?;
        self.user = welcome
            .get("user")
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.welcome = Some(welcome.clone());
        Ok(welcome)
    }

    /// Renew the session with `token` (`refresh`); returns the `refreshed` reply or the server error.
    pub async fn refresh(&mut self, token: &str) -> Result<Frame> {
        self.call(json!({"type": "refresh", "token": token}), "refreshed")
            .await
    }

    /// `join` a room (with `since` for recovery) and return `joined`.
    pub async fn join(&mut self, room: &str, since: Option<u64>) -> Result<Joined> {
        let mut frame = json!({"type": "join", "room": room});
        if let Some(since) = since {
            frame["since"] = json!(since);
        }
        parse(self.call(frame, "joined").await?)
    }

    /// `leave` a room and wait for `left`.
    pub async fn leave(&mut self, room: &str) -> Result<()> {
        self.call(json!({"type": "leave", "room": room}), "left")
            .await
            .map(drop)
    }

    /// `send` a message to a room and return the `ack`.
    pub async fn send(&mut self, room: &str, body: &str, client_id: Option<&str>) -> Result<Ack> {
        let mut frame = json!({"type": "send", "room": room, "body": body});
        if let Some(id) = client_id {
            frame["client_id"] = json!(id);
        }
        parse(self.call(frame, "ack").await?)
    }

    /// Send a `dm` and return the `dm_ack`.
    pub async fn dm(&mut self, to: &str, body: &str, client_id: Option<&str>) -> Result<DmAck> {
        let mut frame = json!({"type": "dm", "to": to, "body": body});
        if let Some(id) = client_id {
            frame["client_id"] = json!(id);
        }
        parse(self.call(frame, "dm_ack").await?)
    }

    /// Send a `typing` notice (no reply).
    pub async fn typing(&mut self, room: &str) -> Result<()> {
        self.send_frame(&json!({"type": "typing", "room": room}))
            .await
    }

    /// Move this user's read marker (no reply; a `read` event goes to the room).
    pub async fn read(&mut self, room: &str, seq: u64) -> Result<()> {
        self.send_frame(&json!({"type": "read", "room": room, "seq": seq}))
            .await
    }

    /// Ask for a page of history.
    pub async fn history(
        &mut self,
        room: &str,
        before: Option<u64>,
        limit: Option<u64>,
    ) -> Result<HistoryPage> {
        let mut frame = json!({"type": "history", "room": room});
        if let Some(before) = before {
            frame["before"] = json!(before);
        }
        if let Some(limit) = limit {
            frame["limit"] = json!(limit);
        }
        parse(self.call(frame, "history").await?)
    }

    /// Ask for the last-seen state of users.
    pub async fn last_seen(
        &mut self,
        users: &[&str],
    ) -> Result<std::collections::BTreeMap<String, LastSeen>> {
        let reply = self
            .call(json!({"type": "last_seen", "users": users}), "last_seen")
            .await?;
        let users = reply
            .get("users")
            .cloned()
            .ok_or_else(|| Error::Unexpected(format!("last_seen without users: {reply}")))?;
        parse(users)
    }

    /// `ping` and wait for `pong`; returns the pong's `ts`.
    pub async fn ping(&mut self) -> Result<u64> {
        let reply = self.call(json!({"type": "ping"}), "pong").await?;
        reply
            .get("ts")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::Unexpected(format!("pong without ts: {reply}")))
    }

    /// Send a normal close (1000) and wait briefly for the node's close reply.
    pub async fn close(mut self) -> Result<()> {
        if self.closed.is_some() {
            return Ok(());
        }
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
        Ok(())
    }

    // -------------------------------------------------------------- receiving

    /// The next frame (buffered first), waiting at most [`DEFAULT_TIMEOUT`].
    pub async fn next_frame(&mut self) -> Result<Frame> {
        self.next_frame_within(DEFAULT_TIMEOUT).await
    }

    /// The next frame (buffered first), waiting at most `timeout`.
    pub async fn next_frame_within(&mut self, timeout: Duration) -> Result<Frame> {
        if let Some(frame) = self.buffer.pop_front() {
            return Ok(frame);
        }
        let deadline = Instant::now() + timeout;
        self.read_socket(deadline, timeout, "the next frame").await
    }

    /// Wait for the first frame of type `ty`, buffering the others.
    pub async fn expect_type(&mut self, ty: &str, timeout: Duration) -> Result<Frame> {
        let what = format!("a {ty:?} frame");
        self.wait_for_named(&what, |f| frame_type(f) == Some(ty), timeout)
            .await
    }

    /// Wait for the first frame matching `predicate` (searching the buffer first), buffering the others.
    pub async fn wait_for(
        &mut self,
        predicate: impl FnMut(&Frame) -> bool,
        timeout: Duration,
    ) -> Result<Frame> {
        self.wait_for_named("a matching frame", predicate, timeout)
            .await
    }

    /// [`wait_for`](Self::wait_for) with a description for the timeout error.
    pub async fn wait_for_named(
        &mut self,
        what: &str,
        mut predicate: impl FnMut(&Frame) -> bool,
        timeout: Duration,
    ) -> Result<Frame> {
        if let Some(index) = self.buffer.iter().position(&mut predicate)
            && let Some(frame) = self.buffer.remove(index)
        {
            return Ok(frame);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let frame = self.read_socket(deadline, timeout, what).await?;
            if predicate(&frame) {
                return Ok(frame);
            }
            self.buffer.push_back(frame);
        }
    }

    /// Wait for a room `message` matching `predicate`.
    pub async fn wait_message(
        &mut self,
        room: &str,
        mut predicate: impl FnMut(&RoomMessage) -> bool,
        timeout: Duration,
    ) -> Result<RoomMessage> {
        let what = format!("a message in {room:?}");
        let frame = self
            .wait_for_named(
                &what,
                |f| {
                    frame_type(f) == Some("message")
                        && f.get("room").and_then(Value::as_str) == Some(room)
                        && serde_json::from_value::<RoomMessage>(f.clone())
                            .is_ok_and(|m| predicate(&m))
                },
                timeout,
            )
            .await?;
        parse(frame)
    }

    /// Collect the next `count` `message` frames of `room`, in the order they arrived (buffer first).
    /// The protocol delivers them in `seq` order; tests check that on the result.
    pub async fn messages_in(
        &mut self,
        room: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<RoomMessage>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            let what = format!("message {} of {count} in {room:?}", out.len() + 1);
            let frame = self
                .wait_for_named(
                    &what,
                    |f| {
                        frame_type(f) == Some("message")
                            && f.get("room").and_then(Value::as_str) == Some(room)
                    },
                    left,
                )
                .await
                .map_err(|e| match e {
                    Error::Timeout { what, .. } => Error::Timeout {
                        after: timeout,
                        what,
                    },
                    other => other,
                })?;
            out.push(parse(frame)?);
        }
        Ok(out)
    }

    /// Wait for a `dm` frame.
    pub async fn expect_dm(&mut self, timeout: Duration) -> Result<DirectMessage> {
        parse(self.expect_type("dm", timeout).await?)
    }

    /// Wait for an `error` frame with `code`.
    pub async fn expect_error(&mut self, code: &str, timeout: Duration) -> Result<Frame> {
        let what = format!("error {code:?}");
        self.wait_for_named(
            &what,
            |f| {
                frame_type(f) == Some("error")
                    && f.get("code").and_then(Value::as_str) == Some(code)
            },
            timeout,
        )
        .await
    }

    /// Read (buffering every frame) until the connection closes; returns the close code and reason.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Result<(u16, String)> {
        if let Some(closed) = &self.closed {
            return Ok(closed.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .read_socket(deadline, timeout, "the connection to close")
                .await
            {
                Ok(frame) => self.buffer.push_back(frame),
                Err(Error::Closed { code, reason, .. }) => return Ok((code, reason)),
                Err(other) => return Err(other),
            }
        }
    }

    /// Read one protocol frame from the socket before `deadline`, answering nothing but recording closes.
    async fn read_socket(
        &mut self,
        deadline: Instant,
        timeout: Duration,
        what: &str,
    ) -> Result<Frame> {
        loop {
            if let Some((code, reason)) = &self.closed {
                return Err(Error::Closed {
                    code: *code,
                    reason: reason.clone(),
                    what: what.to_owned(),
                });
            }
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(next) => next,
                Err(_) => {
                    return Err(Error::Timeout {
                        after: timeout,
                        what: what.to_owned(),
                    });
                }
            };
            match next {
                Some(Ok(Message::Text(text))) => {
                    let frame: Frame = serde_json::from_str(text.as_str()).map_err(|e| {
                        Error::Unexpected(format!("non-JSON text frame ({e}): {}", text.as_str()))
                    })?;
                    if frame_type(&frame).is_none() {
                        return Err(Error::Unexpected(format!("frame without type: {frame}")));
                    }
                    return Ok(frame);
                }
                Some(Ok(Message::Close(close))) => {
                    self.closed = Some(match close {
                        Some(c) => (u16::from(c.code), c.reason.as_str().to_owned()),
                        None => (1005, String::new()),
                    });
                }
                Some(Ok(Message::Binary(data))) => {
                    return Err(Error::Unexpected(format!(
                        "binary message of {} bytes",
                        data.len()
                    )));
                }
                Some(Ok(_)) => {} // ping/pong/raw frames: tungstenite answers pings by itself
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                ))
                | None => {
                    if self.closed.is_none() {
                        self.closed = Some((ABNORMAL_CLOSE, "connection dropped".into()));
                    }
                }
                Some(Err(e)) => {
                    self.closed = Some((ABNORMAL_CLOSE, e.to_string()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_appended_with_the_right_separator() {
        assert_eq!(with_query("ws://h:1/ws", "user", "a"), "ws://h:1/ws?user=a");
        assert_eq!(
            with_query("ws://h:1/ws?x=1", "user", "a"),
            "ws://h:1/ws?x=1&user=a"
        );
    }

    #[test]
    fn host_port_is_taken_from_ws_urls() {
        assert_eq!(
            host_port("ws://127.0.0.1:8080/ws?user=a"),
            Some("127.0.0.1:8080")
        );
        assert_eq!(host_port("ws://localhost:9"), Some("localhost:9"));
        assert_eq!(host_port("http://x"), None);
    }
}
