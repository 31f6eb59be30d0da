//! The frames a node sends, typed: each reply or event the protocol defines as a struct that
//! `serde` reads from the JSON [`Frame`] the connection hands out, plus the few helpers that look into
//! a raw frame (its `type`, an `error` frame's code).
//!
//! ```text
//!   Frame (serde_json::Value) ──frame_type──▶ "message" ──parse──▶ RoomMessage
//!                                             "ack"     ──parse──▶ Ack
//!                                             "error"   ──server_error──▶ Error::Server
//! ```

use serde::Deserialize;
use serde_json::Value;

use super::{Error, Result};

/// One frame as the node sent it: a JSON object with a string `type`.
pub type Frame = Value;

/// A room `message` frame.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RoomMessage {
    /// Room name.
    pub room: String,
    /// Per-room sequence number.
    pub seq: u64,
    /// Server-assigned id.
    pub id: String,
    /// Sender.
    pub from: String,
    /// Server timestamp (ms since epoch).
    pub ts: u64,
    /// Text.
    pub body: String,
    /// The sender's `client_id`, if it gave one.
    #[serde(default)]
    pub client_id: Option<String>,
}

/// The `ack` reply to `send`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Ack {
    /// Room name.
    pub room: String,
    /// Sequence of the stored message.
    pub seq: u64,
    /// Message id.
    pub id: String,
    /// Server timestamp.
    pub ts: u64,
    /// The `client_id` given.
    #[serde(default)]
    pub client_id: Option<String>,
    /// True when this `client_id` was already stored: no new message was created.
    #[serde(default)]
    pub duplicate: bool,
}

/// The `joined` reply to `join`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Joined {
    /// Room name.
    pub room: String,
    /// Current members, sorted (at most the node's listing cap).
    pub members: Vec<String>,
    /// How many members there are (`members` may list fewer).
    #[serde(default)]
    pub members_total: usize,
    /// Newest sequence (0 when empty).
    pub last_seq: u64,
    /// Oldest kept sequence (0 when empty).
    pub first_seq: u64,
    /// Stored read markers, user -> seq.
    #[serde(default)]
    pub read: std::collections::BTreeMap<String, u64>,
}

/// A direct message (`dm` frame).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DirectMessage {
    /// The recipient's direct-message sequence.
    pub seq: u64,
    /// Message id.
    pub id: String,
    /// Sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// Server timestamp.
    pub ts: u64,
    /// Text.
    pub body: String,
    /// The sender's `client_id`.
    #[serde(default)]
    pub client_id: Option<String>,
}

/// The `dm_ack` reply to `dm`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DmAck {
    /// Recipient.
    pub to: String,
    /// Message id.
    pub id: String,
    /// Server timestamp.
    pub ts: u64,
    /// The `client_id` given.
    #[serde(default)]
    pub client_id: Option<String>,
    /// True when this `client_id` was already stored.
    #[serde(default)]
    pub duplicate: bool,
}

/// The `history` reply.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct HistoryPage {
    /// Room name.
    pub room: String,
    /// Messages, oldest first.
    pub messages: Vec<RoomMessage>,
    /// Whether older messages are kept.
    pub has_more: bool,
}

/// One user's entry in a `last_seen` reply.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct LastSeen {
    /// Whether the user has a connection now.
    pub online: bool,
    /// Last time seen (ms since epoch), if ever.
    pub last_seen: Option<u64>,
}

/// The `type` of a frame.
pub fn frame_type(frame: &Frame) -> Option<&str> {
    frame.get("type")?.as_str()
}

/// The [`Error::Server`] an `error` frame stands for.
pub(super) fn server_error(frame: Frame) -> Error {
    let code = frame
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let message = frame
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Error::Server {
        code,
        message,
        frame,
    }
}

/// `frame` read as `T`; a frame that does not fit is [`Error::Unexpected`].
pub(super) fn parse<T: serde::de::DeserializeOwned>(frame: Frame) -> Result<T> {
    serde_json::from_value(frame.clone()).map_err(|e| Error::Unexpected(format!("{e}: {frame}")))
}

/// Whether `seqs` are strictly increasing by one.
pub fn consecutive(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[1] == w[0] + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_sequences_are_recognised() {
        assert!(consecutive(&[3, 4, 5]));
        assert!(!consecutive(&[3, 5]));
        assert!(consecutive(&[]));
    }
}
