//! Switchboard's wire: what a client sends and how a node reads it, without sockets, an HTTP client or
//! Redis.
//!
//! ```text
//!  upgraded socket ──▶ ws (WsReader: the node's own WebSocket framing) ──text──▶ protocol::parse
//!  first frame ──▶ identity::identify_hello ──token──▶ auth::Authenticator ──▶ Identity (names checked)
//!  server frames ◀── protocol (serialized once) ◀── ws::encode_frame
//! ```
//!
//! chat-node re-exports these modules under its own names (`chat_node::protocol`, …) and adds the
//! rest: sessions, the hub, the stores, the HTTP edge and the JWKS cache (`chat_node::auth`). The crate
//! is small on purpose: the fuzz targets (`fuzz/`) build it with sanitizer flags on every full test
//! run. See chat-node's `PROTOCOL.md` for the protocol itself.

pub mod auth;
pub mod identity;
pub mod names;
pub mod protocol;
pub mod ws;
