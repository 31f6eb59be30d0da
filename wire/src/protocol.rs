//! The wire protocol of `PROTOCOL.md`: parsing client frames and building server frames.
//!
//! Client frames are parsed in two steps — a JSON object with a `type`, then the fields of that type —
//! so that every failure maps to a precise [`ErrorCode`]. Server frames are serialized once into
//! [`Utf8Bytes`]; fan-out clones the handle, never the text.
//!
//! Room messages and direct messages are the exception to "serialize with serde": their `seq`, `id`
//! and `ts` are assigned by the store (atomically with the append), so the node serializes the rest of
//! the object once ([`message_tail`]) and the store puts the head in front: the memory store with
//! [`splice_message`], the Redis store inside its post script from the pieces of [`MessageHead`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use tungstenite::Utf8Bytes;

/// Why a client frame was refused; the `code` field of an `error` frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not a JSON object, no `type`, a field of the wrong type, or a binary message.
    BadFrame,
    /// `type` is not a client frame.
    UnknownType,
    /// A user or room name breaks the naming rules.
    InvalidName,
    /// `body` empty or `client_id` malformed.
    InvalidBody,
    /// `body` longer than the limit.
    TooLarge,
    /// Over the per-connection frame rate.
    RateLimited,
    /// The room must be joined first.
    NotJoined,
    /// Too many rooms joined on this connection.
    TooManyRooms,
    /// `hello` after identity was established.
    AlreadyIdentified,
    /// A `refresh` token was refused (the session keeps its current token and expiry).
    AuthFailed,
    /// Not allowed for this user: another user's data, or a private room without a grant.
    Forbidden,
    /// The store or bus did not answer in time; a message may still have been stored (a resend with
    /// the same client id finds it).
    Unavailable,
    /// An unexpected server error; as for `Unavailable`, a resend with the same client id is safe.
    Internal,
    /// An attachment entry is malformed (name, size, type, count).
    InvalidAttachment,
    /// An attachment's declared type is not accepted by the node.
    UnsupportedType,
    /// The user's attachments of the last 24 hours would pass the quota.
    QuotaExceeded,
    /// The node keeps no attachments.
    AttachmentsDisabled,
}

impl ErrorCode {
    /// The code as it appears on the wire and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::AlreadyIdentified => "already_identified",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidAttachment => "invalid_attachment",
            ErrorCode::UnsupportedType => "unsupported_type",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::AttachmentsDisabled => "attachments_disabled",
        }
    }
}

/// A refused client frame: the code and a message a person can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl Refusal {
    /// Builds a refusal.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// WebSocket close codes the node uses (`PROTOCOL.md` section 7).
pub mod close {
    /// Normal close.
    pub const NORMAL: u16 = 1000;
    /// A violation of the WebSocket protocol (an unmasked or malformed frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A frame larger than the limit.
    pub const TOO_BIG: u16 = 1009;
    /// The node is shutting down.
    pub const RESTART: u16 = 1012;
    /// The node is full or draining.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Invalid identity: a bad user name, or a missing, malformed, forged or unacceptable token.
    pub const INVALID_IDENTITY: u16 = 4001;
    /// No `hello` in time.
    pub const HELLO_TIMEOUT: u16 = 4002;
    /// Nothing received for the idle timeout.
    pub const IDLE: u16 = 4003;
    /// The outbound queue overflowed.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The session's token expired without a `refresh` (or the token was already expired at `hello`).
    pub const TOKEN_EXPIRED: u16 = 4011;
    /// Too many frames refused by the rate limit.
    pub const FLOODING: u16 = 4029;
}

/// How a session in a room is told of other members' joins and leaves (`join`'s `presence` field).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceMode {
    /// One `presence` frame per join or leave, as it happens (the default).
    #[default]
    Events,
    /// One `presence_batch` frame per room and `chat_node::hub::PRESENCE_BATCH_EVERY` at most, listing
    /// who joined and who left.
    Batch,
    /// One `presence_count` frame per room and interval at most, with the member count only; `joined`
    /// lists no members (page them with `members`).
    Count,
}

/// The `req` correlation value a client may attach to any frame.
pub type Req = Option<Value>;

/// An attachment as a client declares it in `send` / `dm`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Declared {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// The type the client believes the file is.
    #[serde(rename = "type")]
    pub mime: String,
}

/// A parsed client frame.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientFrame {
    /// Identity, as the first frame when `?user=` was not given.
    Hello {
        /// The user name (open mode; with a token it must equal the token's `sub` if given).
        user: Option<String>,
        /// The token (token mode).
        token: Option<String>,
        /// The last direct-message sequence the client saw.
        dm_since: Option<u64>,
    },
    /// Join a room, optionally recovering everything after `since`.
    Join {
        /// Room name.
        room: String,
        /// Last sequence the client saw.
        since: Option<u64>,
        /// How the session is told of other members' joins and leaves.
        presence: PresenceMode,
    },
    /// A page of a room's member list.
    Members {
        /// Room name.
        room: String,
        /// Names after this one (exclusive), in sorted order; from the start without it.
        after: Option<String>,
        /// Page size.
        limit: Option<u32>,
    },
    /// Leave a room.
    Leave {
        /// Room name.
        room: String,
    },
    /// Post a message to a room.
    Send {
        /// Room name.
        room: String,
        /// Message text (may be empty when the message carries attachments).
        body: String,
        /// Idempotency key.
        client_id: Option<String>,
        /// Files the message carries (their bytes are uploaded over HTTP afterwards).
        attachments: Vec<Declared>,
    },
    /// Send a direct message.
    Dm {
        /// Recipient user name.
        to: String,
        /// Message text (may be empty when the message carries attachments).
        body: String,
        /// Idempotency key.
        client_id: Option<String>,
        /// Files the message carries.
        attachments: Vec<Declared>,
    },
    /// Typing indicator.
    Typing {
        /// Room name.
        room: String,
    },
    /// Read marker.
    Read {
        /// Room name.
        room: String,
        /// Read up to this sequence.
        seq: u64,
    },
    /// Page backwards through history.
    History {
        /// Room name.
        room: String,
        /// Exclusive upper bound.
        before: Option<u64>,
        /// Page size.
        limit: Option<u32>,
    },
    /// Last-seen lookup.
    LastSeen {
        /// Users to look up.
        users: Vec<String>,
    },
    /// Renew the session with a fresh token (same `sub`).
    Refresh {
        /// The new token.
        token: String,
    },
    /// Application-level ping.
    Ping,
}

#[derive(Deserialize)]
struct HelloF {
    user: Option<String>,
    token: Option<String>,
    dm_since: Option<u64>,
}
#[derive(Deserialize)]
struct RefreshF {
    token: String,
}
#[derive(Deserialize)]
struct JoinF {
    room: String,
    since: Option<u64>,
    #[serde(default)]
    presence: PresenceMode,
}
#[derive(Deserialize)]
struct MembersF {
    room: String,
    after: Option<String>,
    limit: Option<u32>,
}
#[derive(Deserialize)]
struct RoomF {
    room: String,
}
#[derive(Deserialize)]
struct SendF {
    room: String,
    body: Option<String>,
    client_id: Option<String>,
    #[serde(default)]
    attachments: Vec<Declared>,
}
#[derive(Deserialize)]
struct DmF {
    to: String,
    body: Option<String>,
    client_id: Option<String>,
    #[serde(default)]
    attachments: Vec<Declared>,
}

/// `body` is required unless the message carries attachments.
fn body_of(ty: &str, body: Option<String>, attachments: &[Declared]) -> Result<String, Refusal> {
    match body {
        Some(b) => Ok(b),
        None if !attachments.is_empty() => Ok(String::new()),
        None => Err(Refusal::new(
            ErrorCode::BadFrame,
            format!("bad `{ty}` frame: missing field `body`"),
        )),
    }
}
#[derive(Deserialize)]
struct ReadF {
    room: String,
    seq: u64,
}
#[derive(Deserialize)]
struct HistoryF {
    room: String,
    before: Option<u64>,
    limit: Option<u32>,
}
#[derive(Deserialize)]
struct LastSeenF {
    users: Vec<String>,
}

/// Longest `req` value echoed back.
const MAX_REQ_CHARS: usize = 64;

/// Parses one text frame. On failure returns the refusal together with whatever `req` could be read,
/// so the error frame can still be correlated.
pub fn parse(text: &str) -> Result<(ClientFrame, Req), (Refusal, Req)> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        (
            Refusal::new(ErrorCode::BadFrame, format!("not JSON: {e}")),
            None,
        )
    })?;
    let Value::Object(map) = value else {
        return Err((
            Refusal::new(ErrorCode::BadFrame, "a frame must be a JSON object"),
            None,
        ));
    };
    let req = match map.get("req") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Number(_)) => Some(v.clone()),
        Some(Value::String(s)) if s.chars().count() <= MAX_REQ_CHARS => {
            Some(Value::String(s.clone()))
        }
        Some(_) => {
            return Err((
                Refusal::new(
                    ErrorCode::BadFrame,
                    "`req` must be a number or a string of at most 64 characters",
                ),
                None,
            ));
        }
    };
    let ty = match map.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => {
            return Err((
                Refusal::new(ErrorCode::BadFrame, "a frame needs a string field `type`"),
                req,
            ));
        }
    };
    let value = Value::Object(map);
    fn fields<T: serde::de::DeserializeOwned>(ty: &str, v: Value) -> Result<T, Refusal> {
        serde_json::from_value(v)
            .map_err(|e| Refusal::new(ErrorCode::BadFrame, format!("bad `{ty}` frame: {e}")))
    }
    let frame = match ty.as_str() {
        "hello" => fields::<HelloF>(&ty, value).map(|f| ClientFrame::Hello {
            user: f.user,
            token: f.token,
            dm_since: f.dm_since,
        }),
        "refresh" => {
            fields::<RefreshF>(&ty, value).map(|f| ClientFrame::Refresh { token: f.token })
        }
        "join" => fields::<JoinF>(&ty, value).map(|f| ClientFrame::Join {
            room: f.room,
            since: f.since,
            presence: f.presence,
        }),
        "members" => fields::<MembersF>(&ty, value).map(|f| ClientFrame::Members {
            room: f.room,
            after: f.after,
            limit: f.limit,
        }),
        "leave" => fields::<RoomF>(&ty, value).map(|f| ClientFrame::Leave { room: f.room }),
        "send" => fields::<SendF>(&ty, value).and_then(|f| {
            Ok(ClientFrame::Send {
                body: body_of(&ty, f.body, &f.attachments)?,
                room: f.room,
                client_id: f.client_id,
                attachments: f.attachments,
            })
        }),
        "dm" => fields::<DmF>(&ty, value).and_then(|f| {
            Ok(ClientFrame::Dm {
                body: body_of(&ty, f.body, &f.attachments)?,
                to: f.to,
                client_id: f.client_id,
                attachments: f.attachments,
            })
        }),
        "typing" => fields::<RoomF>(&ty, value).map(|f| ClientFrame::Typing { room: f.room }),
        "read" => fields::<ReadF>(&ty, value).map(|f| ClientFrame::Read {
            room: f.room,
            seq: f.seq,
        }),
        "history" => fields::<HistoryF>(&ty, value).map(|f| ClientFrame::History {
            room: f.room,
            before: f.before,
            limit: f.limit,
        }),
        "last_seen" => {
            fields::<LastSeenF>(&ty, value).map(|f| ClientFrame::LastSeen { users: f.users })
        }
        "ping" => Ok(ClientFrame::Ping),
        other => Err(Refusal::new(
            ErrorCode::UnknownType,
            format!("unknown frame type `{}`", truncate(other, 40)),
        )),
    };
    frame.map(|f| (f, req.clone())).map_err(|r| (r, req))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A `presence` frame: `user`'s first connection joined (`"join"`) or last connection left
/// (`"leave"`) `room`, now.
pub fn presence(room: &str, user: &str, event: &str) -> Utf8Bytes {
    encode(&ServerFrame::Presence {
        room,
        user,
        event,
        ts: now_ms(),
    })
}

/// Serializes a server frame once.
pub fn encode<T: Serialize>(frame: &T) -> Utf8Bytes {
    // Serializing our own plain structs cannot fail; fall back to an internal error frame anyway.
    match serde_json::to_string(frame) {
        Ok(s) => Utf8Bytes::from(s),
        Err(_) => Utf8Bytes::from_static(
            r#"{"type":"error","code":"internal","message":"could not encode frame"}"#,
        ),
    }
}

/// Limits announced in `welcome`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AnnouncedLimits<'a> {
    /// Largest WebSocket message accepted.
    pub max_frame_bytes: usize,
    /// Longest message body.
    pub max_body_chars: usize,
    /// Sustained frame rate.
    pub rate_per_sec: u32,
    /// Burst above the rate.
    pub rate_burst: u32,
    /// Largest history page.
    pub history_page_max: u32,
    /// Rooms per connection.
    pub max_rooms: usize,
    /// Idle timeout in milliseconds.
    pub idle_timeout_ms: u64,
    /// Whether the node keeps attachments.
    pub attachments: bool,
    /// Largest attachment (0 when attachments are off).
    pub max_attachment_bytes: u64,
    /// Attachments per message.
    pub max_attachments: usize,
    /// Attachment bytes per user per 24 hours.
    pub attachment_quota_bytes: u64,
    /// Length of every upload chunk but the last.
    pub upload_chunk_bytes: u64,
    /// Accepted attachment types.
    pub attachment_types: &'a [String],
}

/// Frames the node sends that are not spliced by the store.
#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ServerFrame<'a> {
    Welcome {
        user: &'a str,
        node: &'a str,
        session: &'a str,
        server_time: u64,
        dm_seq: u64,
        limits: &'a AnnouncedLimits<'a>,
        /// `open` or `jwt`.
        auth: &'a str,
        /// When the session's token expires (ms since the epoch); absent in open mode.
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
    },
    Refreshed {
        expires_at: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: &'a Req,
    },
    Joined {
        room: &'a str,
        members: Vec<String>,
        members_total: usize,
        last_seq: u64,
        first_seq: u64,
        read: BTreeMap<String, u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: &'a Req,
    },
    Left {
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: &'a Req,
    },
    Ack {
        room: &'a str,
        seq: u64,
        id: &'a str,
        ts: u64,
        client_id: Option<&'a str>,
        duplicate: bool,
        /// Upload tickets (`id`, `upload_url`) of the message's attachments.
        #[serde(skip_serializing_if = "Option::is_none")]
        attachments: Option<Vec<Value>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: &'a Req,
    },
    DmAck {
        to: &'a str,
        id: &'a str,
        ts: u64,
        client_id: Option<&'a str>,
        duplicate: bool,
        /// Upload tickets (`id`, `upload_url`) of the message's attachments.
        #[serde(skip_serializing_if = "Option::is_none")]
        attachments: Option<Vec<Value>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: &'a Req,
    },
    Presence {
        room: &'a str,
        user: &'a str,
        event: &'a str,
        ts: u64,
    },
    Typing {
        room: &'a str,
        user: &'a str,
    },
    Read {
        room: &'a str,
        user: &'a str,
        seq: u64,
    },
    PresenceBatch {
        room: &'a str,
        joins: Vec<&'a str>,
        leaves: Vec<&'a str>,
        /// More joins and leaves happened than the lists hold: page `members` to see who is there.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
        members_total: u64,
        ts: u64,
    },
    PresenceCount {
        room: &'a str,
        members_total: u64,
        ts: u64,
    },
    Members {
        room: &'a str,
        members: &'a [String],
        members_total: usize,
        has_more: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: &'a Req,
    },
    LastSeen {
        users: BTreeMap<String, LastSeenEntry>,
        /// Asked-for users this session may not see (no shared room, no direct message).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        hidden: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: &'a Req,
    },
    Pong {
        ts: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: &'a Req,
    },
    Reconnect {
        reason: &'a str,
        retry_after_ms: u64,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        req: &'a Req,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// The `history` reply: stored frames are spliced in as they are, not re-serialized.
pub fn history_frame<'a>(
    room: &str,
    frames: impl Iterator<Item = &'a str>,
    has_more: bool,
    req: &Req,
) -> Utf8Bytes {
    let mut out = String::with_capacity(256);
    out.push_str(r#"{"type":"history","room":"#);
    out.push_str(&Value::String(room.to_owned()).to_string());
    out.push_str(r#","messages":["#);
    for (i, f) in frames.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(f);
    }
    out.push_str(r#"],"has_more":"#);
    out.push_str(if has_more { "true" } else { "false" });
    if let Some(r) = req {
        out.push_str(r#","req":"#);
        out.push_str(&r.to_string());
    }
    out.push('}');
    Utf8Bytes::from(out)
}

/// One user's entry in a `last_seen` reply.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LastSeenEntry {
    /// Connected anywhere right now.
    pub online: bool,
    /// When the user's last connection closed, if ever.
    pub last_seen: Option<u64>,
}

// The frame of a stored message, written once: `{"type":"KIND","seq":SEQ,"id":"ID","ts":TS` and the
// tail. The pieces between the values are these constants; `kind` and `id` are ours and need no escaping
// (`message`/`dm`, and hex ids).
const FRAME_BEFORE_KIND: &str = r#"{"type":""#;
const FRAME_BEFORE_SEQ: &str = r#"","seq":"#;
const FRAME_BEFORE_ID: &str = r#","id":""#;
const FRAME_BEFORE_TS: &str = r#"","ts":"#;
/// Longest decimal `u64`.
const MAX_U64_DIGITS: usize = 20;

/// The part of a `message` or `dm` frame that the node knows before the store assigns `seq`, `id`
/// and `ts`: every remaining field, each after a comma, and the closing brace.
pub fn message_tail(fields: &[(&str, Option<&str>)]) -> String {
    let mut out = String::with_capacity(64);
    for (k, v) in fields {
        out.push_str(",\"");
        out.push_str(k);
        out.push_str("\":");
        match v {
            Some(v) => out.push_str(&Value::String((*v).to_owned()).to_string()),
            None => out.push_str("null"),
        }
    }
    out.push('}');
    out
}

/// A tail of [`message_tail`] with one more field whose value is JSON already (`raw`).
pub fn tail_with_raw(mut tail: String, key: &str, raw: &str) -> String {
    tail.pop();
    tail.push_str(",\"");
    tail.push_str(key);
    tail.push_str("\":");
    tail.push_str(raw);
    tail.push('}');
    tail
}

/// The frame of a stored message cut around the two numbers the store assigns atomically with the
/// append: `before_seq` SEQ `before_ts` TS tail. The Redis store hands these pieces to its post script,
/// which only inserts the numbers, so the layout of the frame is written once, here (a test against a
/// real Redis proves the two frames equal byte for byte).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageHead {
    /// `{"type":"KIND","seq":`
    pub before_seq: String,
    /// `,"id":"ID","ts":`
    pub before_ts: String,
}

impl MessageHead {
    /// The head pieces of a `kind` frame (`message` or `dm`) with message id `id`.
    pub fn new(kind: &str, id: &str) -> Self {
        Self {
            before_seq: [FRAME_BEFORE_KIND, kind, FRAME_BEFORE_SEQ].concat(),
            before_ts: [FRAME_BEFORE_ID, id, FRAME_BEFORE_TS].concat(),
        }
    }
}

/// The full frame from the store-assigned `seq`, `id`, `ts` and the node-built tail: the pieces of
/// [`MessageHead`] joined in Rust (written straight into one buffer of the right size).
pub fn splice_message(kind: &str, seq: u64, id: &str, ts: u64, tail: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(
        FRAME_BEFORE_KIND.len()
            + kind.len()
            + FRAME_BEFORE_SEQ.len()
            + FRAME_BEFORE_ID.len()
            + id.len()
            + FRAME_BEFORE_TS.len()
            + 2 * MAX_U64_DIGITS
            + tail.len(),
    );
    out.push_str(FRAME_BEFORE_KIND);
    out.push_str(kind);
    out.push_str(FRAME_BEFORE_SEQ);
    let _ = write!(out, "{seq}");
    out.push_str(FRAME_BEFORE_ID);
    out.push_str(id);
    out.push_str(FRAME_BEFORE_TS);
    let _ = write!(out, "{ts}");
    out.push_str(tail);
    out
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        match parse(text) {
            Ok(f) => panic!("expected a refusal, parsed {f:?}"),
            Err((r, _)) => r.code,
        }
    }

    #[test]
    fn parses_every_client_frame() {
        let (f, req) =
            parse(r#"{"type":"join","room":"lobby","since":4,"req":"r1"}"#).expect("join");
        assert_eq!(
            f,
            ClientFrame::Join {
                room: "lobby".into(),
                since: Some(4),
                presence: PresenceMode::Events,
            }
        );
        assert_eq!(req, Some(Value::String("r1".into())));
        let (f, _) =
            parse(r#"{"type":"send","room":"r","body":"hi","client_id":"c1"}"#).expect("send");
        assert!(matches!(f, ClientFrame::Send { client_id: Some(ref c), .. } if c == "c1"));
        assert!(matches!(
            parse(r#"{"type":"ping"}"#),
            Ok((ClientFrame::Ping, None))
        ));
        assert!(matches!(
            parse(r#"{"type":"last_seen","users":["a","b"]}"#),
            Ok((ClientFrame::LastSeen { .. }, None))
        ));
        assert!(matches!(
            parse(r#"{"type":"history","room":"r","before":10,"limit":5}"#),
            Ok((
                ClientFrame::History {
                    before: Some(10),
                    limit: Some(5),
                    ..
                },
                None
            ))
        ));
    }

    #[test]
    fn malformed_frames_get_precise_codes() {
        assert_eq!(code("not json"), ErrorCode::BadFrame);
        assert_eq!(code("[1,2]"), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"room":"x"}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"type":"send","room":"x"}"#), ErrorCode::BadFrame);
        assert_eq!(
            code(r#"{"type":"read","room":"x","seq":-1}"#),
            ErrorCode::BadFrame
        );
        assert_eq!(code(r#"{"type":"fly"}"#), ErrorCode::UnknownType);
    }

    #[test]
    fn req_is_kept_even_when_the_frame_is_refused() {
        let Err((r, req)) = parse(r#"{"type":"send","req":7}"#) else {
            panic!("must be refused")
        };
        assert_eq!(r.code, ErrorCode::BadFrame);
        assert_eq!(req, Some(Value::from(7)));
    }

    #[test]
    fn spliced_message_is_valid_json_with_every_field() {
        let tail = message_tail(&[
            ("room", Some("lobby")),
            ("from", Some("alice")),
            ("body", Some("say \"hi\"\n")),
            ("client_id", None),
        ]);
        let frame = splice_message("message", 3, "abc", 17, &tail);
        let v: Value = serde_json::from_str(&frame).expect("valid JSON");
        assert_eq!(v["type"], "message");
        assert_eq!(v["seq"], 3);
        assert_eq!(v["id"], "abc");
        assert_eq!(v["ts"], 17);
        assert_eq!(v["body"], "say \"hi\"\n");
        assert_eq!(v["client_id"], Value::Null);
    }

    #[test]
    fn splice_message_joins_the_head_pieces_the_redis_script_gets() {
        let tail = message_tail(&[("from", Some("a")), ("body", Some("b"))]);
        let head = MessageHead::new("dm", "0123abcd");
        let joined = format!(
            "{}{}{}{}{tail}",
            head.before_seq, 7, head.before_ts, 1_767_225_600_000u64
        );
        assert_eq!(
            splice_message("dm", 7, "0123abcd", 1_767_225_600_000, &tail),
            joined
        );
        assert_eq!(
            joined,
            r#"{"type":"dm","seq":7,"id":"0123abcd","ts":1767225600000,"from":"a","body":"b"}"#
        );
    }

    #[test]
    fn error_frame_serializes_code_in_snake_case() {
        let req = Some(Value::from(1));
        let f = encode(&ServerFrame::Error {
            code: ErrorCode::RateLimited,
            message: "slow down",
            req: &req,
            retry_after_ms: Some(50),
        });
        let v: Value = serde_json::from_str(f.as_str()).expect("json");
        assert_eq!(v["code"], "rate_limited");
        assert_eq!(v["req"], 1);
        assert_eq!(v["retry_after_ms"], 50);
    }
}
