//! Files in Switchboard messages, apart from the chat protocol: where the bytes are kept
//! ([`store`]: an S3 bucket through the Apache Arrow `object_store` client, or a local directory),
//! what a file is ([`sniff`]: from its bytes, never from the client), image sizes and thumbnails
//! ([`thumb`]), signed short-lived URLs ([`sign`]), safe file names ([`names`]) and the node's flags
//! ([`config`]).
//!
//! ```text
//! client ──send {attachments:[{name,size,type}]}──▶ chat-node ── message stored, seq assigned ──▶ members
//!    │                                                   └─ ack: upload URLs (signed, sender only)
//!    └──PUT /v1/uploads/{id} (8 MiB chunks, resumable)──▶ any chat-node ──put_part──▶ store
//!                      last chunk: type from the bytes, thumbnail ──▶ `attachment` update to members
//! members ──GET /v1/attachments/{id}/{name}?exp&sig──▶ any chat-node ──get (streamed)──▶ store
//! ```
//!
//! The chat side (records, frames, routes) lives in `chat-node`; the operator uses [`store::Store::probe`]
//! to report whether a ChatCluster's bucket is reachable.

pub mod config;
pub mod names;
pub mod sign;
pub mod sniff;
pub mod store;
pub mod thumb;

pub use config::{AttachmentArgs, AttachmentConfig, CHUNK_BYTES, MAX_ATTACHMENTS};
pub use store::{S3Config, Store};
