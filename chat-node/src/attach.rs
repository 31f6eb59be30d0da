//! Attachments on the chat side: what a `send` or `dm` with files declares, the record of every
//! attachment in the shared store, the `attachment` updates members receive, the current state that
//! history and recovery return, and the sweeper that fails uploads that never complete. The HTTP
//! upload and download endpoints are in [`http`]; bytes, types and thumbnails in
//! `switchboard_attachments`.
//!
//! ```text
//! send {attachments}  ─▶ declare (names, sizes, types) ─▶ quota ─▶ post (frame lists them "pending")
//!                     ─▶ records att:{msg}.{i} (pending, due at the upload deadline) ─▶ ack + upload URLs
//! PUT chunks (http)   ─▶ lock ─▶ first bytes: type ─▶ parts ─▶ complete ─▶ thumbnail ─▶ record ready
//!                                                                    └─▶ `attachment` update to members
//! history / recovery  ─▶ frames that list attachments get each one's current state (one store read)
//! sweeper (30 s)      ─▶ due records still pending ─▶ failed (`expired`), parts deleted, update
//! ```
//!
//! An attachment id is `{message id}.{index}`, so a resent message (same `client_id`) finds the
//! attachments of the original. Records live in the store every node shares ([`Backend::record_put`]),
//! so any node serves any upload or download; one upload request at a time holds an attachment's lock.

pub mod http;

use crate::backend::{Backend, Stored};
use crate::hub::Topic;
use crate::node::Node;
use crate::protocol::{ErrorCode, Refusal, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use switchboard_attachments::names::{sanitize, url_segment};
use switchboard_attachments::sign::{Purpose, Signer, hex, random_secret};
use switchboard_attachments::sniff::is_mime;
use switchboard_attachments::{AttachmentConfig, MAX_ATTACHMENTS};
use switchboard_runtime::report::chain;
use tokio::sync::Semaphore;
use tungstenite::Utf8Bytes;

/// How long a finished attachment's record is kept (as long as an idle room's history).
pub const RECORD_TTL: Duration = crate::config::ROOM_TTL;
/// How often the sweeper looks for uploads past their deadline, and the store is probed.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// The due list of pending attachments.
const PENDING: &str = "attachments:pending";
/// Window of the per-user quota.
const QUOTA_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The store key of the URL-signing secret every node shares.
const SECRET_KEY: &str = "attachments:url-secret";
/// Download URLs expire on these boundaries, so URLs handed out close together are equal (and cached).
const URL_EXPIRY_STEP_MS: u64 = 5 * 60 * 1000;

/// An attachment as a client declares it in `send` / `dm` (a part of the wire protocol).
pub use crate::protocol::Declared;

/// Where a message with attachments went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A room.
    Room(String),
    /// A direct message to this user.
    Dm(String),
}

/// One attachment's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Declared; the bytes are not all stored yet.
    Pending,
    /// Stored and checked: it can be downloaded.
    Ready,
    /// Given up (wrong type, never completed, store failure): it will not be shown.
    Failed,
}

/// What the shared store keeps of one attachment (`att:{id}`, JSON).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// `{message id}.{index}`.
    pub id: String,
    /// The message id.
    pub msg: String,
    /// Where the message went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The recipient of a direct message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The room sequence of the message (0 for direct messages).
    #[serde(default)]
    pub seq: u64,
    /// Sender.
    pub from: String,
    /// Sanitised file name.
    pub name: String,
    /// Declared size: the upload must be exactly this long.
    pub size: u64,
    /// The type the sender declared.
    pub declared: String,
    /// State.
    pub state: State,
    /// When the message was sent (ms).
    pub created: u64,
    /// When an unfinished upload is given up (ms).
    pub deadline: u64,
    /// The store's multipart upload id, once the first bytes arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<String>,
    /// Store part ids, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    /// Bytes stored so far.
    #[serde(default)]
    pub offset: u64,
    /// The type found from the bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    /// Image width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Image height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// A thumbnail was stored.
    #[serde(default)]
    pub thumb: bool,
    /// Why it failed: a code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it failed: words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Record {
    /// Where the bytes are kept.
    pub fn object_key(&self) -> String {
        format!("objects/{}", self.id)
    }

    /// Where the thumbnail is kept.
    pub fn thumb_key(&self) -> String {
        format!("thumbs/{}", self.id)
    }
}

fn record_key(id: &str) -> String {
    format!("att:{id}")
}

fn lock_key(id: &str) -> String {
    format!("att-lock:{id}")
}

fn quota_key(user: &str) -> String {
    format!("att-quota:<{user}>")
}

/// Whether `id` has the shape of an attachment id (`{16 hex}.{index}`): anything else is refused
/// before the store is asked.
pub fn valid_id(id: &str) -> bool {
    match id.split_once('.') {
        Some((msg, i)) => {
            msg.len() == 16
                && msg.bytes().all(|b| b.is_ascii_hexdigit())
                && !i.is_empty()
                && i.len() <= 2
                && i.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// A node's attachments: configuration, URL signing, and the bounds on concurrent work.
pub struct Attachments {
    /// Flags.
    pub config: AttachmentConfig,
    signer: Signer,
    /// Upload requests served at once.
    uploads: Arc<Semaphore>,
    /// Thumbnails made at once (CPU-bound, on blocking threads).
    thumbs: Semaphore,
}

impl std::fmt::Debug for Attachments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachments")
            .field("store", &self.config.store)
            .finish_non_exhaustive()
    }
}

impl Attachments {
    /// Sets up attachments for `node`: fetches (or makes) the cluster's URL-signing secret from the
    /// store, starts the sweeper and the store probe (both stop with `stop`).
    pub async fn start(
        node: &Arc<Node>,
        config: AttachmentConfig,
        stop: tokio_util::sync::CancellationToken,
    ) -> crate::backend::Result<Arc<Self>> {
        let secret = shared_secret(node.backend.as_ref()).await?;
        let max_uploads = config.max_uploads;
        let this = Arc::new(Self {
            config,
            signer: Signer::new(&secret),
            uploads: Arc::new(Semaphore::new(max_uploads)),
            thumbs: Semaphore::new(1),
        });
        tracing::info!(store = %this.config.store.describe(), "attachments on");
        let node = node.clone();
        let attachments = this.clone();
        tokio::spawn(async move {
            // Short upload timeouts (tests) are swept sooner, so a deadline is met within half of it.
            let every = SWEEP_EVERY
                .min(attachments.config.upload_timeout / 2)
                .max(Duration::from_secs(1));
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                attachments.probe(&node).await;
                attachments.sweep(&node).await;
            }
        });
        Ok(this)
    }

    async fn probe(&self, node: &Node) {
        let up = match tokio::time::timeout(Duration::from_secs(5), self.config.store.probe()).await
        {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, store = %self.config.store.describe(), "attachment store unavailable");
                false
            }
            Err(_) => {
                tracing::warn!(store = %self.config.store.describe(), "attachment store did not answer in 5 s");
                false
            }
        };
        node.metrics.attachment_store_up.set(i64::from(up));
    }

    /// Checks the attachments of a `send` / `dm`: count, names, sizes, types. Returns them with
    /// sanitised names.
    pub fn declare(&self, declared: Vec<Declared>) -> Result<Vec<Declared>, Refusal> {
        if declared.is_empty() || declared.len() > MAX_ATTACHMENTS {
            return Err(Refusal::new(
                ErrorCode::InvalidAttachment,
                format!("a message carries 1 to {MAX_ATTACHMENTS} attachments"),
            ));
        }
        declared
            .into_iter()
            .map(|d| {
                if d.name.trim().is_empty() || d.name.chars().count() > 1024 {
                    return Err(Refusal::new(
                        ErrorCode::InvalidAttachment,
                        "an attachment needs a `name` of 1-1024 characters",
                    ));
                }
                if d.size == 0 {
                    return Err(Refusal::new(
                        ErrorCode::InvalidAttachment,
                        format!(
                            "'{}' is empty: `size` must be at least 1",
                            sanitize(&d.name)
                        ),
                    ));
                }
                if d.size > self.config.max_bytes {
                    return Err(Refusal::new(
                        ErrorCode::TooLarge,
                        format!(
                            "'{}' is {} bytes; the largest attachment is {} bytes",
                            sanitize(&d.name),
                            d.size,
                            self.config.max_bytes
                        ),
                    ));
                }
                let mime = d.mime.trim().to_ascii_lowercase();
                if !is_mime(&mime) {
                    return Err(Refusal::new(
                        ErrorCode::InvalidAttachment,
                        "an attachment's `type` must be a MIME type like image/png",
                    ));
                }
                if !self.config.types.allows(&mime) {
                    return Err(Refusal::new(
                        ErrorCode::UnsupportedType,
                        format!(
                            "{mime} is not accepted here; accepted: {}",
                            self.config.types.list().join(", ")
                        ),
                    ));
                }
                Ok(Declared {
                    name: sanitize(&d.name),
                    size: d.size,
                    mime,
                })
            })
            .collect()
    }

    /// Takes `bytes` from `user`'s quota of the last 24 hours.
    pub async fn reserve(&self, node: &Node, user: &str, bytes: u64) -> Result<(), Refusal> {
        let taken = node
            .backend
            .counter_add(
                &quota_key(user),
                i64::try_from(bytes).unwrap_or(i64::MAX),
                self.config.quota_bytes,
                QUOTA_WINDOW,
            )
            .await
            .map_err(|e| Refusal::new(e.code(), "the store is unavailable; nothing was sent"))?;
        if taken {
            Ok(())
        } else {
            Err(Refusal::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "these files would pass your {} bytes of attachments per 24 hours",
                    self.config.quota_bytes
                ),
            ))
        }
    }

    /// Gives `bytes` back to `user`'s quota (a refused post, a duplicate, a failed upload).
    pub async fn give_back(&self, node: &Node, user: &str, bytes: u64) {
        let delta = -i64::try_from(bytes).unwrap_or(i64::MAX);
        if let Err(e) = node
            .backend
            .counter_add(
                &quota_key(user),
                delta,
                self.config.quota_bytes,
                QUOTA_WINDOW,
            )
            .await
        {
            tracing::debug!(error = %chain(&e), "giving back attachment quota failed");
        }
    }

    /// The `attachments` field of a message frame (every one `pending`), for the frame's tail.
    pub fn frame_field(msg: &str, declared: &[Declared]) -> String {
        let list: Vec<Value> = declared
            .iter()
            .enumerate()
            .map(|(i, d)| {
                json!({"id": format!("{msg}.{i}"), "name": d.name, "size": d.size,
                       "type": d.mime, "state": State::Pending})
            })
            .collect();
        Value::Array(list).to_string()
    }

    /// After the message is stored: records its attachments (kept if they exist: a resend) and
    /// returns the sender's upload tickets (`{"id","upload_url"}`).
    pub async fn after_post(
        &self,
        node: &Node,
        target: &Target,
        from: &str,
        msg: &str,
        seq: u64,
        declared: &[Declared],
    ) -> Result<Vec<Value>, Refusal> {
        let now = now_ms();
        let deadline = now + self.config.upload_timeout.as_millis() as u64;
        let mut tickets = Vec::with_capacity(declared.len());
        for (i, d) in declared.iter().enumerate() {
            let id = format!("{msg}.{i}");
            let (room, to) = match target {
                Target::Room(r) => (Some(r.clone()), None),
                Target::Dm(u) => (None, Some(u.clone())),
            };
            let record = Record {
                id: id.clone(),
                msg: msg.to_owned(),
                room,
                to,
                seq,
                from: from.to_owned(),
                name: d.name.clone(),
                size: d.size,
                declared: d.mime.clone(),
                state: State::Pending,
                created: now,
                deadline,
                upload: None,
                parts: Vec::new(),
                offset: 0,
                found: None,
                width: None,
                height: None,
                thumb: false,
                error: None,
                reason: None,
            };
            let created = self.save(node, &record, true).await.map_err(|e| {
                Refusal::new(
                    e.code(),
                    "the store is unavailable; resend with the same client_id",
                )
            })?;
            if created {
                node.backend
                    .due_put(PENDING, &id, deadline)
                    .await
                    .map_err(|e| {
                        Refusal::new(
                            e.code(),
                            "the store is unavailable; resend with the same client_id",
                        )
                    })?;
            }
            tickets.push(json!({"id": id, "upload_url": self.upload_url(&id, deadline)}));
        }
        Ok(tickets)
    }

    /// The upload URL of `id`, valid until `until` (ms).
    pub fn upload_url(&self, id: &str, until: u64) -> String {
        format!(
            "/v1/uploads/{id}?{}",
            self.signer.query(Purpose::Upload, id, until)
        )
    }

    /// The signer (the HTTP side checks URLs with it).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Stores a record (with `only_new`, only if absent); its lifetime follows its state.
    pub async fn save(
        &self,
        node: &Node,
        record: &Record,
        only_new: bool,
    ) -> crate::backend::Result<bool> {
        let ttl = match record.state {
            State::Pending => self.config.upload_timeout + Duration::from_secs(24 * 3600),
            State::Ready | State::Failed => RECORD_TTL,
        };
        let json = serde_json::to_string(record)
            .map_err(|e| crate::backend::Error::Protocol(e.to_string()))?;
        node.backend
            .record_put(&record_key(&record.id), json, ttl, only_new)
            .await
    }

    /// The records of `ids` (None where there is none or it does not parse).
    pub async fn load(
        &self,
        node: &Node,
        ids: &[String],
    ) -> crate::backend::Result<Vec<Option<Record>>> {
        let keys = ids.iter().map(|id| record_key(id)).collect();
        let values = node.backend.records_get(keys).await?;
        Ok(values
            .into_iter()
            .map(|v| v.and_then(|v| serde_json::from_str(&v).ok()))
            .collect())
    }

    /// Takes the upload lock of `id` for `ttl`: the token to release it with, or None when another
    /// request holds it.
    pub async fn lock(
        &self,
        node: &Node,
        id: &str,
        ttl: Duration,
    ) -> crate::backend::Result<Option<String>> {
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let taken = node
            .backend
            .record_put(&lock_key(id), token.clone(), ttl, true)
            .await?;
        Ok(taken.then_some(token))
    }

    /// Releases a lock taken with [`Attachments::lock`].
    pub async fn unlock(&self, node: &Node, id: &str, token: String) {
        if let Err(e) = node.backend.record_delete(&lock_key(id), Some(token)).await {
            tracing::debug!(error = %chain(&e), "releasing an upload lock failed (it expires)");
        }
    }

    /// The state object of an attachment as members see it (`PROTOCOL.md` section 10).
    pub fn view(&self, r: &Record) -> Value {
        let mut v = json!({"id": r.id, "name": r.name, "size": r.size,
                           "type": r.found.as_deref().unwrap_or(&r.declared), "state": r.state});
        match r.state {
            State::Ready => {
                let exp = url_expiry(now_ms(), self.config.url_ttl);
                v["url"] = Value::String(format!(
                    "/v1/attachments/{}/{}?{}",
                    r.id,
                    url_segment(&r.name),
                    self.signer.query(Purpose::Download, &r.id, exp)
                ));
                if let (Some(w), Some(h)) = (r.width, r.height) {
                    v["width"] = w.into();
                    v["height"] = h.into();
                }
                if r.thumb {
                    v["thumbnail_url"] = Value::String(format!(
                        "/v1/thumbnails/{}?{}",
                        r.id,
                        self.signer.query(Purpose::Thumbnail, &r.id, exp)
                    ));
                }
            }
            State::Failed => {
                v["error"] = Value::String(r.error.clone().unwrap_or_else(|| "failed".into()));
                v["reason"] = Value::String(r.reason.clone().unwrap_or_default());
            }
            State::Pending => {}
        }
        v
    }

    /// The `attachment` update of a record.
    pub fn update_frame(&self, r: &Record) -> Utf8Bytes {
        let mut frame =
            json!({"type": "attachment", "message_id": r.msg, "attachment": self.view(r)});
        match (&r.room, &r.to) {
            (Some(room), _) => {
                frame["room"] = Value::String(room.clone());
                frame["seq"] = r.seq.into();
            }
            (None, Some(to)) => {
                frame["from"] = Value::String(r.from.clone());
                frame["to"] = Value::String(to.clone());
            }
            (None, None) => {}
        }
        Utf8Bytes::from(frame.to_string())
    }

    /// Tells every member (both parties of a direct message, on every node) the record's state.
    pub async fn publish(&self, node: &Node, r: &Record) {
        let frame = self.update_frame(r);
        let topics: Vec<Topic> = match (&r.room, &r.to) {
            (Some(room), _) => vec![Topic::room(room)],
            (None, Some(to)) if *to != r.from => vec![Topic::user(to), Topic::user(&r.from)],
            (None, Some(to)) => vec![Topic::user(to)],
            (None, None) => Vec::new(),
        };
        for topic in topics {
            if let Err(e) = node.backend.publish(topic, frame.clone()).await {
                tracing::warn!(error = %chain(&e), id = %r.id, "publishing an attachment update failed");
            }
        }
    }

    /// Marks an attachment failed (`error` code, `reason` words): deletes what was uploaded, gives
    /// the quota back, and tells the members.
    pub async fn fail(&self, node: &Node, mut r: Record, error: &str, reason: String) -> Record {
        if let Some(upload) = r.upload.take()
            && let Err(e) = self.config.store.abort(&r.object_key(), &upload).await
        {
            tracing::warn!(error = %e, id = %r.id, "deleting the parts of a failed upload failed");
        }
        r.state = State::Failed;
        r.parts.clear();
        r.error = Some(error.to_owned());
        r.reason = Some(reason);
        if let Err(e) = self.save(node, &r, false).await {
            tracing::warn!(error = %chain(&e), id = %r.id, "recording a failed attachment failed");
        }
        if let Err(e) = node.backend.due_remove(PENDING, &r.id).await {
            tracing::debug!(error = %chain(&e), "taking a failed attachment off the due list failed");
        }
        self.give_back(node, &r.from, r.size).await;
        node.metrics.attachments_failed.inc();
        self.publish(node, &r).await;
        r
    }

    /// Fails the attachments whose upload deadline passed (each taken by one node only).
    async fn sweep(&self, node: &Node) {
        let due = match node.backend.due_take(PENDING, now_ms(), 100).await {
            Ok(due) => due,
            Err(e) => {
                tracing::debug!(error = %chain(&e), "the attachment sweeper could not read the due list");
                return;
            }
        };
        for id in due {
            let Ok(Some(token)) = self.lock(node, &id, Duration::from_secs(60)).await else {
                // An upload is running right now: look again in a minute.
                let _ = node.backend.due_put(PENDING, &id, now_ms() + 60_000).await;
                continue;
            };
            if let Ok(mut records) = self.load(node, std::slice::from_ref(&id)).await
                && let Some(Some(r)) = records.pop()
                && r.state == State::Pending
            {
                let timeout = switchboard_runtime::duration::display(self.config.upload_timeout);
                self.fail(
                    node,
                    r,
                    "expired",
                    format!("the upload did not complete within {timeout} of the message"),
                )
                .await;
            }
            self.unlock(node, &id, token).await;
        }
    }

    /// Stored frames with each listed attachment's current state (frames without attachments are
    /// passed through untouched; one store read for all the others).
    pub async fn current(&self, node: &Node, frames: Vec<Stored>) -> Vec<Stored> {
        if !frames.iter().any(|s| lists_attachments(&s.frame)) {
            return frames;
        }
        let mut parsed: Vec<Option<Value>> = frames
            .iter()
            .map(|s| {
                lists_attachments(&s.frame)
                    .then(|| serde_json::from_str::<Value>(&s.frame).ok())
                    .flatten()
            })
            .collect();
        let ids: Vec<String> = parsed
            .iter()
            .flatten()
            .flat_map(|v| v["attachments"].as_array().into_iter().flatten())
            .filter_map(|a| a["id"].as_str().map(str::to_owned))
            .collect();
        let records = match self.load(node, &ids).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "attachment states unavailable; frames sent as stored");
                return frames;
            }
        };
        let mut by_id: std::collections::HashMap<String, Record> = ids
            .into_iter()
            .zip(records)
            .filter_map(|(id, r)| r.map(|r| (id, r)))
            .collect();
        let now = now_ms();
        frames
            .into_iter()
            .zip(parsed.iter_mut())
            .map(|(stored, v)| {
                let Some(v) = v else { return stored };
                let ts = v["ts"].as_u64().unwrap_or(now);
                if let Some(list) = v["attachments"].as_array_mut() {
                    for a in list.iter_mut() {
                        let id = a["id"].as_str().unwrap_or_default().to_owned();
                        *a = match by_id.remove(&id) {
                            Some(r) => self.view(&r),
                            None => self.missing(a.clone(), ts, now),
                        };
                    }
                }
                Stored {
                    seq: stored.seq,
                    frame: Utf8Bytes::from(v.to_string()),
                }
            })
            .collect()
    }

    /// The state of an attachment without a record: pending while its message is young (the record
    /// is being written), failed once it is older than an upload may take (the record is gone).
    fn missing(&self, mut listed: Value, ts: u64, now: u64) -> Value {
        if now.saturating_sub(ts) < self.config.upload_timeout.as_millis() as u64 {
            return listed;
        }
        listed["state"] = json!(State::Failed);
        listed["error"] = json!("expired");
        listed["reason"] = json!("this attachment is no longer kept");
        listed
    }

    /// A permit for one upload request, or None when the node serves as many as it may.
    pub fn upload_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.uploads.clone().try_acquire_owned().ok()
    }

    /// Makes a thumbnail of a stored image (one at a time per node, on a blocking thread).
    pub async fn make_thumbnail(&self, r: &Record) -> bool {
        if r.size > switchboard_attachments::thumb::THUMB_MAX_INPUT {
            return false;
        }
        let Ok(_permit) = self.thumbs.acquire().await else {
            return false;
        };
        let bytes = match self
            .config
            .store
            .read_all(
                &r.object_key(),
                switchboard_attachments::thumb::THUMB_MAX_INPUT,
            )
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, id = %r.id, "reading an image for its thumbnail failed");
                return false;
            }
        };
        let made =
            tokio::task::spawn_blocking(move || switchboard_attachments::thumb::thumbnail(&bytes))
                .await;
        match made {
            Ok(Ok(jpeg)) => match self.config.store.put(&r.thumb_key(), jpeg.into()).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, id = %r.id, "storing a thumbnail failed");
                    false
                }
            },
            Ok(Err(e)) => {
                tracing::info!(error = %e, id = %r.id, "no thumbnail");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "the thumbnail task failed");
                false
            }
        }
    }
}

/// Whether a stored frame lists attachments (the field as JSON writes it; inside a string its quote
/// would be escaped, so a body cannot fake it).
fn lists_attachments(frame: &str) -> bool {
    frame.contains("\"attachments\":[")
}

/// A download URL's expiry: `ttl` from now, rounded up to the next 5-minute boundary.
fn url_expiry(now: u64, ttl: Duration) -> u64 {
    let exp = now + ttl.as_millis() as u64;
    exp.div_ceil(URL_EXPIRY_STEP_MS) * URL_EXPIRY_STEP_MS
}

/// The cluster's URL-signing secret: made once by whichever node asks first, then read by all.
async fn shared_secret(backend: &dyn Backend) -> crate::backend::Result<Vec<u8>> {
    let mine = hex(&random_secret());
    // Ten years: the secret is not data of any user; losing it only ends the URLs handed out.
    let ttl = Duration::from_secs(10 * 365 * 24 * 3600);
    backend
        .record_put(SECRET_KEY, mine.clone(), ttl, true)
        .await?;
    let stored = backend
        .records_get(vec![SECRET_KEY.to_owned()])
        .await?
        .pop()
        .flatten()
        .unwrap_or(mine);
    Ok(stored.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_one_shape() {
        assert!(valid_id("0123456789abcdef.0"));
        assert!(valid_id("0123456789abcdef.9"));
        assert!(!valid_id("0123456789abcdef"));
        assert!(!valid_id("0123456789abcdeg.0"));
        assert!(!valid_id("../../etc/passwd.0"));
        assert!(!valid_id("0123456789abcdef.100"));
        assert!(!valid_id("0123456789abcdef."));
    }

    #[test]
    fn url_expiries_round_up_to_five_minutes() {
        let hour = Duration::from_secs(3600);
        assert_eq!(url_expiry(0, hour), 3_600_000);
        assert_eq!(url_expiry(1, hour), 3_600_000 + URL_EXPIRY_STEP_MS);
        assert_eq!(url_expiry(299_999, hour), url_expiry(1, hour));
    }

    #[test]
    fn only_the_field_itself_counts_as_a_list_of_attachments() {
        assert!(lists_attachments(
            r#"{"type":"message","attachments":[{"id":"x"}]}"#
        ));
        assert!(!lists_attachments(
            r#"{"type":"message","body":"\"attachments\":[ is not a field"}"#
        ));
    }
}
