//! One identified connection: turns client frames into store operations and replies.
//!
//! The session knows nothing about sockets: it reads text frames handed to it and writes serialized
//! frames into its [`SessionHandle`]'s queue, so it runs unchanged under the WebSocket server and in
//! unit tests against the in-memory backend.
//!
//! Joining a room (and, at start, the user's direct-message topic) follows one recipe that gives
//! neither gap nor duplicate: attach as *pending* (live events are buffered), subscribe, read history,
//! send it, then [`Hub::drain_pending`](crate::hub::Hub::drain_pending) merges the buffer behind it.
//!
//! Replies are bounded in bytes: a history page stops at [`Limits::max_reply_bytes`] (`has_more`),
//! `joined` lists at most [`MAX_MEMBERS_LISTED`] members and the room's capped read markers, and
//! recovery reads and sends [`RECOVERY_CHUNK`] messages at a time, each waiting for room in the
//! client's queue — so neither the node's memory nor one reply grows with what clients ask for.
//!
//! [`Limits::max_reply_bytes`]: crate::limits::Limits::max_reply_bytes

use crate::attach::{Attachments, Declared, Target};
use crate::backend::{Joining, Post, Posted, Stored};
use crate::hub::{Drained, SessionHandle, Topic};
use crate::identity::Identity;
use crate::limits::{FloodGuard, TokenBucket, TypingGate};
use crate::names::{is_private_room, valid_client_id, valid_room, valid_user};
use crate::node::Node;
use crate::protocol::{
    AnnouncedLimits, ClientFrame, ErrorCode, PresenceMode, Refusal, Req, ServerFrame, close,
    encode, history_frame, message_tail, now_ms, parse, presence, tail_with_raw,
};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use switchboard_runtime::report::chain;
use tungstenite::Utf8Bytes;

/// Default history page size.
const DEFAULT_PAGE: u32 = 50;
/// Members listed in `joined` at most (`members_total` gives the count): 1000 names of at most 32
/// characters keep the reply under 40 KB.
pub const MAX_MEMBERS_LISTED: usize = 1000;
/// Messages read from the store and queued at a time while recovering or paging: bounds what one
/// request holds in memory to a few megabytes even with the longest messages.
pub const RECOVERY_CHUNK: usize = 25;
/// Room a `history` reply keeps for its envelope (type, room, has_more, req) next to the messages.
const HISTORY_ENVELOPE: usize = 512;

/// What the connection should do after a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Keep reading.
    Continue,
    /// Close with this code.
    Close(u16),
}

/// An identified session.
pub struct Session {
    node: Arc<Node>,
    handle: Arc<SessionHandle>,
    peer: Option<SocketAddr>,
    expires_at: Option<SystemTime>,
    grants: BTreeSet<String>,
    session_name: String,
    rooms: BTreeSet<String>,
    bucket: TokenBucket,
    flood: FloodGuard,
    typing: TypingGate,
}

impl Session {
    /// Starts a session for an identified user: sends `welcome`, then every direct message not yet
    /// delivered (or after `dm_since`), then delivers live. `peer` is only used in refusal logs.
    pub async fn start(
        node: Arc<Node>,
        handle: Arc<SessionHandle>,
        identity: &Identity,
        peer: Option<SocketAddr>,
    ) -> Self {
        let l = &node.settings.limits;
        let dm_since = identity.dm_since;
        let mut s = Self {
            peer,
            expires_at: identity.expires_at,
            grants: identity.rooms.iter().cloned().collect(),
            session_name: format!("{}-{}", node.settings.id, handle.id),
            bucket: TokenBucket::new(l.rate_per_sec, l.rate_burst),
            flood: FloodGuard::new(l.flood_refusals, l.flood_window),
            typing: TypingGate::new(l.typing_interval),
            rooms: BTreeSet::new(),
            node,
            handle,
        };
        s.begin(dm_since).await;
        s
    }

    async fn begin(&mut self, dm_since: Option<u64>) {
        let node = self.node.clone();
        let user = self.handle.user.clone();
        let topic = Topic::User(user.clone());
        // The round trips every start makes take a turn; the replay of missed messages (which may
        // wait for this client to read) does not hold one.
        let turn = node.start_turn().await;
        node.hub.attach(&topic, &self.handle, true);
        let subscribed = node.ensure_subscribed(&topic).await;
        // The first session of a user on this node subscribed just now, and the backend read the
        // inbox's state to start its cursor: one round trip instead of two.
        let state = match subscribed {
            Ok(Some(state)) => state,
            _ => node.backend.dm_state(&user).await.unwrap_or_default(),
        };
        drop(turn);
        let (dm_seq, cursor) = (state.last, state.cursor);
        let l = &node.settings.limits;
        let announced = AnnouncedLimits {
            max_frame_bytes: l.max_frame_bytes,
            max_body_chars: l.max_body_chars,
            rate_per_sec: l.rate_per_sec,
            rate_burst: l.rate_burst,
            history_page_max: l.history_page_max,
            max_rooms: l.max_rooms,
            idle_timeout_ms: l.idle_timeout.as_millis() as u64,
            attachments: node.attachments.get().is_some(),
            max_attachment_bytes: node.attachments.get().map_or(0, |a| a.config.max_bytes),
            max_attachments: switchboard_attachments::MAX_ATTACHMENTS,
            attachment_quota_bytes: node.attachments.get().map_or(0, |a| a.config.quota_bytes),
            upload_chunk_bytes: switchboard_attachments::CHUNK_BYTES,
            attachment_types: node
                .attachments
                .get()
                .map_or(&[], |a| a.config.types.list()),
        };
        self.handle.deliver(&encode(&ServerFrame::Welcome {
            user: &user,
            node: &node.settings.id,
            session: &self.session_name,
            server_time: now_ms(),
            dm_seq,
            limits: &announced,
            auth: node.settings.auth.mode(),
            expires_at: self.expires_at.map(unix_ms),
        }));
        if let Err(e) = subscribed {
            self.refuse(
                &None,
                Refusal::new(e.code(), "direct messages are unavailable right now"),
            );
        }
        // A cursor above the sequence counter means the inbox expired and its sequence started
        // again. One above the visible mark only is a store behind on confirmations (a failover's
        // new master): nothing new to send yet, and a full replay would repeat what the client has.
        let after = dm_since.unwrap_or(cursor);
        let after = if after > state.counter { 0 } else { after };
        let cursor = cursor.min(dm_seq);
        let sent = self
            .send_stored_after(&topic, after, None, crate::config::INBOX_CAP)
            .await
            .unwrap_or(after);
        let high = self.go_live(&topic, sent).await;
        let _turn = node.start_turn().await;
        if high > cursor {
            let _ = node.backend.dm_delivered(&user, high).await;
        }
        let _ = node.backend.user_online(&user, &node.settings.id).await;
    }

    /// Queues a reply to this client's own request, waiting for room in its queue (see
    /// [`SessionHandle::deliver_wait`]). False once the session is closing.
    async fn send_big(&self, frame: &Utf8Bytes) -> bool {
        let wait = self.node.settings.limits.reply_wait;
        self.handle.deliver_wait(frame, wait).await
    }

    /// Sends the stored messages of `topic` (a room's history, the user's inbox) after `after`, chunk
    /// by chunk, at most `max` in all; `first` is the first chunk when it was read already. Returns the
    /// highest sequence sent.
    async fn send_stored_after(
        &self,
        topic: &Topic,
        mut after: u64,
        first: Option<Vec<Stored>>,
        max: usize,
    ) -> crate::backend::Result<u64> {
        let backend = &self.node.backend;
        let mut next = first;
        let mut sent = 0;
        loop {
            let want = RECOVERY_CHUNK.min(max - sent);
            if want == 0 {
                return Ok(after);
            }
            let chunk = match next.take() {
                Some(chunk) => chunk,
                None => match topic {
                    Topic::Room(r) => backend.history_after(r, after, want).await?,
                    Topic::User(u) => backend.dms_after(u, after, want).await?,
                },
            };
            let got = chunk.len();
            let chunk = self.with_attachment_states(chunk).await;
            for s in &chunk {
                if !self.send_big(&s.frame).await {
                    return Ok(after);
                }
                self.node.hub.stats.deliveries.inc();
                after = after.max(s.seq);
            }
            sent += got;
            if got < want {
                return Ok(after);
            }
        }
    }

    /// Stored frames with their attachments' current state (unchanged without attachments).
    async fn with_attachment_states(&self, frames: Vec<Stored>) -> Vec<Stored> {
        match self.node.attachments.get() {
            Some(att) => att.current(&self.node, frames).await,
            None => frames,
        }
    }

    /// Checks the attachments of a message; empty when it has none.
    fn declare(&self, attachments: Vec<Declared>) -> Result<Vec<Declared>, Refusal> {
        if attachments.is_empty() {
            return Ok(attachments);
        }
        let Some(att) = self.node.attachments.get() else {
            return Err(Refusal::new(
                ErrorCode::AttachmentsDisabled,
                "this node keeps no attachments (it runs without an attachment store)",
            ));
        };
        att.declare(attachments)
    }

    /// Stores a room message or a direct message, with its attachments: quota, post, records.
    /// Returns what was posted and the sender's upload tickets.
    async fn post_message(
        &self,
        target: Target,
        tail: String,
        client_id: Option<String>,
        declared: Vec<Declared>,
    ) -> Result<(Posted, Option<Vec<serde_json::Value>>), Refusal> {
        let node = &self.node;
        let user = self.handle.user.to_string();
        let id = new_id();
        let att = node.attachments.get().filter(|_| !declared.is_empty());
        let reserved: u64 = declared.iter().map(|d| d.size).sum();
        let tail = match att {
            Some(_) => tail_with_raw(
                tail,
                "attachments",
                &Attachments::frame_field(&id, &declared),
            ),
            None => tail,
        };
        if let Some(att) = att {
            att.reserve(node, &user, reserved).await?;
        }
        let post = Post {
            target: match &target {
                Target::Room(r) | Target::Dm(r) => r.clone(),
            },
            from: user.clone(),
            client_id,
            id,
            tail,
        };
        let posted = match target {
            Target::Room(_) => node.backend.post(post).await,
            Target::Dm(_) => node.backend.send_dm(post).await,
        };
        let posted = match posted {
            Ok(p) => p,
            Err(e) => {
                if let Some(att) = att {
                    att.give_back(node, &user, reserved).await;
                }
                return Err(store_refusal(e));
            }
        };
        let Some(att) = att else {
            return Ok((posted, None));
        };
        if posted.duplicate {
            att.give_back(node, &user, reserved).await;
        }
        let tickets = att
            .after_post(node, &target, &user, &posted.id, posted.seq, &declared)
            .await?;
        Ok((posted, Some(tickets)))
    }

    /// Ends the recovery of `topic`: hands over what was buffered meanwhile (waiting for room in the
    /// queue between batches), then delivers live. Returns the highest sequence handed over.
    async fn go_live(&self, topic: &Topic, mut high: u64) -> u64 {
        loop {
            match self.node.hub.drain_pending(topic, self.handle.id, high) {
                Drained::Live(h) => return h,
                Drained::Refill(h) => match self.refill(topic, h).await {
                    Ok(h) => high = h,
                    Err(code) => {
                        self.handle.kick(code);
                        return h;
                    }
                },
                Drained::Batch(frames, h) => {
                    for f in &frames {
                        if self.send_big(f).await {
                            self.node.hub.stats.deliveries.inc();
                        }
                    }
                    high = h;
                }
            }
        }
    }

    /// Reads again from the store what the hub dropped while the room outpaced a recovery
    /// ([`Drained::Refill`]): everything after `after` that is still kept (a room that took more than
    /// its history cap meanwhile has dropped the oldest: the client sees the jump in `seq`). Returns
    /// the highest sequence sent, or 1013 when the store is unreachable.
    async fn refill(&self, topic: &Topic, after: u64) -> Result<u64, u16> {
        self.send_stored_after(topic, after, None, usize::MAX)
            .await
            .map_err(|e| {
                tracing::warn!(error = %chain(&e), "recovery refill failed; closing with 1013");
                close::TRY_AGAIN_LATER
            })
    }

    /// One history page: up to `limit` messages before `before`, newest kept first and cut where
    /// the reply would pass the byte limit; read from the store a chunk at a time. Returns the page
    /// (oldest first) and whether older messages are kept.
    async fn history_page(
        &self,
        room: &str,
        before: u64,
        limit: usize,
    ) -> crate::backend::Result<(Vec<Stored>, bool)> {
        let budget = self
            .node
            .settings
            .limits
            .max_reply_bytes
            .saturating_sub(HISTORY_ENVELOPE);
        let mut kept: Vec<Stored> = Vec::new();
        let mut used = 0;
        let mut cursor = before;
        loop {
            let want = (limit - kept.len()).min(RECOVERY_CHUNK) + 1;
            let chunk = self.node.backend.history_before(room, cursor, want).await?;
            let got = chunk.len();
            for s in chunk.into_iter().rev() {
                let n = s.frame.len() + 1;
                if kept.len() == limit || (!kept.is_empty() && used + n > budget) {
                    kept.reverse();
                    return Ok((kept, true));
                }
                used += n;
                cursor = s.seq;
                kept.push(s);
            }
            if got < want {
                kept.reverse();
                return Ok((kept, false));
            }
        }
    }

    fn reply(&self, frame: &ServerFrame<'_>) {
        self.handle.deliver(&encode(frame));
    }

    fn refuse(&self, req: &Req, r: Refusal) {
        self.refuse_after(req, r, None);
    }

    fn refuse_after(&self, req: &Req, r: Refusal, retry_after_ms: Option<u64>) {
        let visible = match r.code {
            ErrorCode::RateLimited => Some("rate_limited"),
            ErrorCode::TooLarge => Some("too_large"),
            ErrorCode::Forbidden => Some("forbidden"),
            ErrorCode::AuthFailed => Some("auth_refresh"),
            _ => None,
        };
        if let Some(reason) = visible {
            self.node.metrics.refusals.record(
                reason,
                self.peer,
                Some(&self.handle.user),
                &r.message,
            );
        }
        self.node
            .metrics
            .errors
            .get_or_create(&crate::metrics::CodeLabel {
                code: r.code.as_str(),
            })
            .inc();
        self.reply(&ServerFrame::Error {
            code: r.code,
            message: &r.message,
            req,
            retry_after_ms,
        });
    }

    /// Handles one text frame.
    pub async fn on_text(&mut self, text: &str) -> Control {
        if let Err(wait) = self.bucket.take() {
            let (_, req) = parse(text).unwrap_or_else(|(_, req)| (ClientFrame::Ping, req));
            let wait_ms = (wait.as_millis() as u64).max(1);
            self.refuse_after(
                &req,
                Refusal::new(
                    ErrorCode::RateLimited,
                    format!(
                        "more than {} frames per second; frame dropped",
                        self.node.settings.limits.rate_per_sec
                    ),
                ),
                Some(wait_ms),
            );
            return self.count_refusal();
        }
        let (frame, req) = match parse(text) {
            Ok(f) => f,
            Err((r, req)) => {
                self.refuse(&req, r);
                return self.count_refusal();
            }
        };
        self.node
            .metrics
            .frames_in
            .get_or_create(&crate::metrics::TypeLabel {
                r#type: frame_type(&frame),
            })
            .inc();
        match self.handle_frame(frame, &req).await {
            Ok(()) => Control::Continue,
            Err(r) => {
                self.refuse(&req, r);
                self.count_refusal()
            }
        }
    }

    /// Handles a binary message (always refused).
    pub fn on_binary(&mut self) -> Control {
        self.refuse(
            &None,
            Refusal::new(
                ErrorCode::BadFrame,
                "binary messages are not supported; send JSON text frames",
            ),
        );
        self.count_refusal()
    }

    fn count_refusal(&mut self) -> Control {
        if self.flood.refused() {
            Control::Close(close::FLOODING)
        } else {
            Control::Continue
        }
    }

    fn joined(&self, room: &str) -> Result<(), Refusal> {
        if self.rooms.contains(room) {
            Ok(())
        } else if !valid_room(room) {
            Err(invalid_room(room))
        } else {
            Err(Refusal::new(
                ErrorCode::NotJoined,
                format!("join room '{room}' first"),
            ))
        }
    }

    fn check_body(
        &self,
        body: &str,
        client_id: Option<&str>,
        has_attachments: bool,
    ) -> Result<(), Refusal> {
        if body.trim().is_empty() && !(has_attachments && body.is_empty()) {
            return Err(Refusal::new(
                ErrorCode::InvalidBody,
                "`body` must hold a character other than whitespace",
            ));
        }
        let max = self.node.settings.limits.max_body_chars;
        if body.len() > max && body.chars().count() > max {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!("`body` is longer than {max} characters"),
            ));
        }
        if let Some(c) = client_id
            && !valid_client_id(c)
        {
            return Err(Refusal::new(
                ErrorCode::InvalidBody,
                "`client_id` must be 1-64 printable characters without spaces or quotes",
            ));
        }
        Ok(())
    }

    async fn handle_frame(&mut self, frame: ClientFrame, req: &Req) -> Result<(), Refusal> {
        let node = self.node.clone();
        let user = self.handle.user.clone();
        match frame {
            ClientFrame::Hello { .. } => Err(Refusal::new(
                ErrorCode::AlreadyIdentified,
                format!("already identified as '{user}'"),
            )),
            ClientFrame::Ping => {
                self.reply(&ServerFrame::Pong { ts: now_ms(), req });
                Ok(())
            }
            ClientFrame::Refresh { token } => self.refresh(&token, req).await,
            ClientFrame::Join {
                room,
                since,
                presence,
            } => self.join(room, since, presence, req).await,
            ClientFrame::Members { room, after, limit } => {
                self.joined(&room)?;
                let limit = limit.map_or(MAX_MEMBERS_LISTED, |l| l as usize);
                let limit = limit.clamp(1, MAX_MEMBERS_LISTED);
                let all = node.backend.members(&room).await.map_err(store_refusal)?;
                let start = after.map_or(0, |a| all.partition_point(|m| *m <= a));
                let page = &all[start..(start + limit).min(all.len())];
                self.send_big(&encode(&ServerFrame::Members {
                    room: &room,
                    members: page,
                    members_total: all.len(),
                    has_more: start + page.len() < all.len(),
                    req,
                }))
                .await;
                Ok(())
            }
            ClientFrame::Leave { room } => {
                self.joined(&room)?;
                self.leave(&room).await;
                self.reply(&ServerFrame::Left { room: &room, req });
                Ok(())
            }
            ClientFrame::Send {
                room,
                body,
                client_id,
                attachments,
            } => {
                self.joined(&room)?;
                self.check_body(&body, client_id.as_deref(), !attachments.is_empty())?;
                let declared = self.declare(attachments)?;
                let tail = message_tail(&[
                    ("room", Some(&room)),
                    ("from", Some(&user)),
                    ("body", Some(&body)),
                    ("client_id", client_id.as_deref()),
                ]);
                let started = std::time::Instant::now();
                let (posted, tickets) = self
                    .post_message(
                        Target::Room(room.clone()),
                        tail,
                        client_id.clone(),
                        declared,
                    )
                    .await?;
                node.metrics
                    .publish_latency
                    .observe(started.elapsed().as_secs_f64());
                if !posted.duplicate {
                    node.metrics.messages.inc();
                }
                self.reply(&ServerFrame::Ack {
                    room: &room,
                    seq: posted.seq,
                    id: &posted.id,
                    ts: posted.ts,
                    client_id: client_id.as_deref(),
                    duplicate: posted.duplicate,
                    attachments: tickets,
                    req,
                });
                Ok(())
            }
            ClientFrame::Dm {
                to,
                body,
                client_id,
                attachments,
            } => {
                if !valid_user(&to) {
                    return Err(Refusal::new(
                        ErrorCode::InvalidName,
                        format!("'{}' is not a valid user name", clip(&to)),
                    ));
                }
                self.check_body(&body, client_id.as_deref(), !attachments.is_empty())?;
                let declared = self.declare(attachments)?;
                let tail = message_tail(&[
                    ("from", Some(&user)),
                    ("to", Some(&to)),
                    ("body", Some(&body)),
                    ("client_id", client_id.as_deref()),
                ]);
                let (posted, tickets) = self
                    .post_message(Target::Dm(to.clone()), tail, client_id.clone(), declared)
                    .await?;
                // Best effort: the message is stored; a lost contact only hides a last-seen time.
                if let Err(e) = node.backend.note_contact(&user, &to).await {
                    tracing::debug!(error = %chain(&e), "recording a direct-message contact failed");
                }
                self.reply(&ServerFrame::DmAck {
                    to: &to,
                    id: &posted.id,
                    ts: posted.ts,
                    client_id: client_id.as_deref(),
                    duplicate: posted.duplicate,
                    attachments: tickets,
                    req,
                });
                Ok(())
            }
            ClientFrame::Typing { room } => {
                self.joined(&room)?;
                if self.typing.allow(&room) {
                    let f = encode(&ServerFrame::Typing {
                        room: &room,
                        user: &user,
                    });
                    node.backend
                        .publish(Topic::room(&room), f)
                        .await
                        .map_err(store_refusal)?;
                }
                Ok(())
            }
            ClientFrame::Read { room, seq } => {
                self.joined(&room)?;
                if let Some(seq) = node
                    .backend
                    .set_read(&room, &user, seq)
                    .await
                    .map_err(store_refusal)?
                {
                    let f = encode(&ServerFrame::Read {
                        room: &room,
                        user: &user,
                        seq,
                    });
                    node.backend
                        .publish(Topic::room(&room), f)
                        .await
                        .map_err(store_refusal)?;
                }
                Ok(())
            }
            ClientFrame::History {
                room,
                before,
                limit,
            } => {
                self.joined(&room)?;
                let max = node.settings.limits.history_page_max;
                let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, max) as usize;
                let (page, has_more) = self
                    .history_page(&room, before.unwrap_or(u64::MAX), limit)
                    .await
                    .map_err(store_refusal)?;
                let page = self.with_attachment_states(page).await;
                self.send_big(&history_frame(
                    &room,
                    page.iter().map(|s| s.frame.as_str()),
                    has_more,
                    req,
                ))
                .await;
                Ok(())
            }
            ClientFrame::LastSeen { users } => {
                let max = node.settings.limits.max_last_seen_users;
                if users.len() > max {
                    return Err(Refusal::new(
                        ErrorCode::BadFrame,
                        format!("at most {max} users per last_seen request"),
                    ));
                }
                if let Some(bad) = users.iter().find(|u| !valid_user(u)) {
                    return Err(Refusal::new(
                        ErrorCode::InvalidName,
                        format!("'{}' is not a valid user name", clip(bad)),
                    ));
                }
                let (visible, hidden) = self.visible(users).await.map_err(store_refusal)?;
                let users = node
                    .backend
                    .last_seen(visible)
                    .await
                    .map_err(store_refusal)?;
                self.reply(&ServerFrame::LastSeen { users, hidden, req });
                Ok(())
            }
        }
    }

    /// `refresh`: a new token for the same user moves the session's expiry (and its room grants).
    async fn refresh(&mut self, token: &str, req: &Req) -> Result<(), Refusal> {
        let auth = self.node.settings.auth.clone();
        if auth.is_open() {
            return Err(Refusal::new(
                ErrorCode::AuthFailed,
                "this node runs open identity; there is no token to refresh",
            ));
        }
        let verified = auth
            .verify(token)
            .await
            .map_err(|r| Refusal::new(ErrorCode::AuthFailed, r.reason()))?;
        if verified.user != *self.handle.user {
            return Err(Refusal::new(
                ErrorCode::AuthFailed,
                "the new token is for another user; a session keeps its user",
            ));
        }
        self.expires_at = verified.expires_at;
        self.grants = verified.rooms.into_iter().collect();
        // A grant the new token no longer carries (and the room's ACL does not give) ends the
        // membership at once.
        let mut revoked = Vec::new();
        for room in &self.rooms {
            if self.forbidden(room).await {
                revoked.push(room.clone());
            }
        }
        for room in revoked {
            self.leave(&room).await;
            self.reply(&ServerFrame::Left {
                room: &room,
                req: &None,
            });
        }
        self.reply(&ServerFrame::Refreshed {
            expires_at: self.expires_at.map_or(0, unix_ms),
            req,
        });
        Ok(())
    }

    /// Default deny for private rooms: only with a grant in the session's token or an entry in the
    /// room's ACL (token mode only: in open mode a name proves nothing, so no private room opens).
    /// Everything done in a room (send, typing, read markers, history, members) requires having joined
    /// it, so this one check guards all of it.
    async fn may_enter(&self, room: &str) -> Result<(), Refusal> {
        if !is_private_room(room) || self.grants.contains(room) {
            return Ok(());
        }
        let node = &self.node;
        if !node.settings.auth.is_open()
            && node
                .backend
                .acl_allows(room, &self.handle.user)
                .await
                .map_err(store_refusal)?
        {
            return Ok(());
        }
        Err(Refusal::new(
            ErrorCode::Forbidden,
            format!(
                "room '{}' is private: neither your token nor the room's ACL lets you in",
                clip(room)
            ),
        ))
    }

    /// Whether `room` is now closed to this session (a store that cannot answer closes nothing).
    async fn forbidden(&self, room: &str) -> bool {
        matches!(self.may_enter(room).await, Err(r) if r.code == ErrorCode::Forbidden)
    }

    /// Leaves the rooms whose ACL entry an admin revoked, unless the token still grants them; the
    /// client gets `left` for each.
    pub async fn apply_revocations(&mut self) {
        for room in self.handle.take_revoked() {
            if self.rooms.contains(&*room) && self.forbidden(&room).await {
                self.leave(&room).await;
                self.reply(&ServerFrame::Left {
                    room: &room,
                    req: &None,
                });
            }
        }
    }

    /// Splits asked-for users into those whose last-seen this session may see and the rest. Visible:
    /// the user themself, anyone they exchanged a direct message with in the last 7 days, and anyone
    /// present in or holding a read marker of a room this session has joined. Nobody else — a name
    /// alone shows nothing.
    async fn visible(
        &self,
        asked: Vec<String>,
    ) -> Result<(Vec<String>, Vec<String>), crate::backend::Error> {
        let me = &*self.handle.user;
        let mut unresolved: BTreeSet<String> = asked.into_iter().collect();
        let mut visible = Vec::new();
        if unresolved.remove(me) {
            visible.push(me.to_owned());
        }
        let backend = &self.node.backend;
        if !unresolved.is_empty() {
            for contact in backend
                .contacts_among(me, unresolved.iter().cloned().collect())
                .await?
            {
                unresolved.remove(&contact);
                visible.push(contact);
            }
        }
        if !unresolved.is_empty() && !self.rooms.is_empty() {
            for peer in backend
                .room_peers_among(
                    self.rooms.iter().cloned().collect(),
                    unresolved.iter().cloned().collect(),
                )
                .await?
            {
                unresolved.remove(&peer);
                visible.push(peer);
            }
        }
        Ok((visible, unresolved.into_iter().collect()))
    }

    /// When the session's token expires (`None` in open mode).
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    async fn join(
        &mut self,
        room: String,
        since: Option<u64>,
        presence_mode: PresenceMode,
        req: &Req,
    ) -> Result<(), Refusal> {
        if !valid_room(&room) {
            return Err(invalid_room(&room));
        }
        self.may_enter(&room).await?;
        let node = self.node.clone();
        let limits = &node.settings.limits;
        let rejoin = self.rooms.contains(&room);
        if !rejoin && self.rooms.len() >= limits.max_rooms {
            return Err(Refusal::new(
                ErrorCode::TooManyRooms,
                format!("at most {} rooms per connection", limits.max_rooms),
            ));
        }
        let user = self.handle.user.clone();
        let topic = Topic::room(&room);
        node.hub.attach(&topic, &self.handle, true);
        // From now on, so presence arriving during the join is already taken as asked.
        node.hub
            .set_presence_mode(&topic, self.handle.id, presence_mode, None);
        // In by the ACL: a revocation published between the check above and the attach reached no
        // session of ours, so look once more now that one would reach it.
        if !rejoin
            && is_private_room(&room)
            && !self.grants.contains(&room)
            && let Err(refusal) = self.may_enter(&room).await
        {
            node.hub.detach(&topic, self.handle.id);
            return Err(refusal);
        }
        let result = async {
            node.ensure_subscribed(&topic).await?;
            let chunk = RECOVERY_CHUNK.min(node.settings.history_cap);
            // A count-only member does not need the list: the store then only counts.
            let list = presence_mode != PresenceMode::Count;
            node.backend
                .join(&room, &user, &node.settings.id, since, chunk, list)
                .await
        }
        .await;
        let Joining {
            first,
            bounds,
            mut members,
            members_total,
            read,
            since,
            history,
        } = match result {
            Ok(v) => v,
            Err(e) => {
                if !rejoin {
                    node.hub.detach(&topic, self.handle.id);
                } else {
                    node.hub.activate(&topic, self.handle.id, u64::MAX);
                }
                return Err(store_refusal(e));
            }
        };
        self.rooms.insert(room.clone());
        // This user's own `presence` join (published below when `first`) will count them again.
        let others = members_total.saturating_sub(usize::from(first));
        node.hub
            .set_presence_mode(&topic, self.handle.id, presence_mode, Some(others as u64));
        members.truncate(MAX_MEMBERS_LISTED);
        self.send_big(&encode(&ServerFrame::Joined {
            room: &room,
            members,
            members_total,
            last_seq: bounds.last,
            first_seq: bounds.first,
            read,
            req,
        }))
        .await;
        let sent = match since {
            Some(s) => {
                let max = node.settings.history_cap;
                match self.send_stored_after(&topic, s, Some(history), max).await {
                    Ok(sent) => sent,
                    Err(e) => {
                        // `joined` is out, so an error frame would leave a gap: reconnecting
                        // with `since` is the client's way to recover.
                        tracing::warn!(error = %chain(&e), "recovery failed; closing with 1013");
                        self.handle.kick(close::TRY_AGAIN_LATER);
                        s
                    }
                }
            }
            None => bounds.last,
        };
        self.go_live(&topic, sent).await;
        if first {
            let f = presence(&room, &user, "join");
            let _ = node.backend.publish(topic, f).await;
        }
        Ok(())
    }

    async fn leave(&mut self, room: &str) {
        let node = self.node.clone();
        let user = self.handle.user.clone();
        let topic = Topic::room(room);
        self.rooms.remove(room);
        self.typing.forget(room);
        node.hub.detach(&topic, self.handle.id);
        if node
            .hub
            .user_listens_elsewhere(&topic, &user, self.handle.id)
        {
            return;
        }
        if let Ok(true) = node
            .backend
            .presence_leave(room, &user, &node.settings.id)
            .await
        {
            let f = presence(room, &user, "leave");
            let _ = node.backend.publish(topic, f).await;
        }
    }

    /// Ends the session: leaves every room (presence), records delivery of direct messages and
    /// last-seen.
    pub async fn end(mut self) {
        let rooms: Vec<String> = self.rooms.iter().cloned().collect();
        for room in rooms {
            self.leave(&room).await;
        }
        let node = self.node.clone();
        let user = self.handle.user.clone();
        let topic = Topic::User(user.clone());
        node.hub.detach(&topic, self.handle.id);
        let delivered = self.handle.dm_delivered();
        if delivered > 0 {
            let _ = node.backend.dm_delivered(&user, delivered).await;
        }
        if !node
            .hub
            .user_listens_elsewhere(&topic, &user, self.handle.id)
        {
            let _ = node
                .backend
                .user_offline(&user, &node.settings.id, now_ms())
                .await;
        }
    }

    /// The session's name as shown in `welcome`.
    pub fn name(&self) -> &str {
        &self.session_name
    }
}

fn frame_type(f: &ClientFrame) -> &'static str {
    match f {
        ClientFrame::Hello { .. } => "hello",
        ClientFrame::Refresh { .. } => "refresh",
        ClientFrame::Join { .. } => "join",
        ClientFrame::Leave { .. } => "leave",
        ClientFrame::Send { .. } => "send",
        ClientFrame::Dm { .. } => "dm",
        ClientFrame::Typing { .. } => "typing",
        ClientFrame::Read { .. } => "read",
        ClientFrame::History { .. } => "history",
        ClientFrame::Members { .. } => "members",
        ClientFrame::LastSeen { .. } => "last_seen",
        ClientFrame::Ping => "ping",
    }
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn invalid_room(room: &str) -> Refusal {
    Refusal::new(
        ErrorCode::InvalidName,
        format!(
            "'{}' is not a valid room name (1-64 of A-Z a-z 0-9 _ . - :, starting with a letter or digit)",
            clip(room)
        ),
    )
}

fn store_refusal(e: crate::backend::Error) -> Refusal {
    tracing::warn!(error = %chain(&e), "store operation failed");
    Refusal::new(
        e.code(),
        "the chat store did not answer in time; a message may have been stored: resend it with the same client_id",
    )
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A server-assigned message id: 64 random bits, hex.
fn new_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

#[cfg(test)]
mod tests;
