//! A Switchboard chat client for tests and tools, written from `chat-node/PROTOCOL.md` alone.
//!
//! A [`ChatClient`] owns one WebSocket. Everything the node sends is read through one place
//! ([`ChatClient::next_frame`]); helpers that wait for a particular frame ([`ChatClient::wait_for`],
//! [`ChatClient::expect_type`], the request helpers such as [`ChatClient::join`]) put every frame they
//! skip into a buffer that later reads drain first, so a test never loses a frame because it was
//! looking for another one:
//!
//! ```text
//!   socket ──▶ read ──▶ matches? ──yes──▶ returned to the caller
//!                          │no
//!                          ▼
//!                   buffer (FIFO) ──▶ searched first by the next wait
//! ```
//!
//! Every wait has a deadline. A close frame from the node is remembered ([`ChatClient::closed`]) and
//! turns later waits into [`Error::Closed`]. Nothing here panics on what the network sends.
//!
//! The pieces, each in its own file, all sharing this module's [`Error`]:
//!
//! ```text
//!   registry    GET /v1/assign, /v1/nodes ──▶ Assignment { url } ─┐
//!   connection  ChatClient: socket, buffering reader, requests ◀───┘
//!   frames      typed frames (RoomMessage, Ack, Joined, ...) parsed from what the reader hands out
//!   tokens      Credentials: open (`?user=`) or HS256 tokens sent in `hello`
//! ```

mod connection;
mod frames;
mod registry;
pub mod tokens;

use std::time::Duration;

use tokio_tungstenite::tungstenite;

pub use connection::{ChatClient, ConnectOptions, Ws};
pub use frames::{
    Ack, DirectMessage, DmAck, Frame, HistoryPage, Joined, LastSeen, RoomMessage, consecutive,
    frame_type,
};
pub use registry::{Assignment, NodeInfo, assign, assign_avoiding, assign_via, nodes};
pub use tokens::{Credentials, TokenIssuer};

/// How long the helpers without an explicit deadline wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Close code a client reports when the connection ended without a close frame (RFC 6455 "abnormal").
pub const ABNORMAL_CLOSE: u16 = 1006;

/// Errors of the test client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node refused the upgrade with an HTTP status (for example 403 for a foreign origin).
    #[error("{url} refused the upgrade with HTTP {status}")]
    Refused {
        /// The URL that was opened.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The WebSocket could not be opened.
    #[error("connecting to {url}")]
    Connect {
        /// The URL that was opened.
        url: String,
        /// What went wrong.
        #[source]
        source: tungstenite::Error,
    },
    /// The TCP socket could not be set up.
    #[error("setting up the socket for {url}")]
    Socket {
        /// The URL that was opened.
        url: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The URL is not a `ws://host:port/...` URL.
    #[error("bad WebSocket URL {0:?}")]
    BadUrl(String),
    /// Sending on an open WebSocket failed.
    #[error("sending on the WebSocket")]
    Ws(#[source] tungstenite::Error),
    /// An HTTP request (registry) failed.
    #[error("GET {url}")]
    Http {
        /// The URL requested.
        url: String,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with a non-200 status.
    #[error("GET {url}: status {status}, retry-after {retry_after:?}: {body}")]
    Unavailable {
        /// The URL requested.
        url: String,
        /// HTTP status.
        status: u16,
        /// `Retry-After` header in seconds, when given.
        retry_after: Option<u64>,
        /// Response body.
        body: String,
    },
    /// No wanted frame arrived before the deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// How long was waited.
        after: Duration,
        /// What was waited for.
        what: String,
    },
    /// The node closed the connection (or it dropped) while a frame was awaited.
    #[error("connection closed with {code} ({reason:?}) while waiting for {what}")]
    Closed {
        /// Close code (1006 when no close frame arrived).
        code: u16,
        /// Close reason text.
        reason: String,
        /// What was waited for.
        what: String,
    },
    /// The node answered a request with an `error` frame.
    #[error("server error {code}: {message}")]
    Server {
        /// The protocol error code (`not_joined`, `too_large`, ...).
        code: String,
        /// The human-readable message.
        message: String,
        /// The whole `error` frame.
        frame: Frame,
    },
    /// The node sent something that is not a protocol frame, or a reply lacked a field.
    #[error("unexpected frame: {0}")]
    Unexpected(String),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The protocol error code when this is a server `error` frame.
    pub fn server_code(&self) -> Option<&str> {
        match self {
            Error::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The close code when the connection closed.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Error::Closed { code, .. } => Some(*code),
            _ => None,
        }
    }
}
