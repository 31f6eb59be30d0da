//! The ordered receiver: one task per node reads every subscribed channel in order and hands each event
//! to the hub, never trusting pub/sub alone.
//!
//! ```text
//! subscriber ──"<seq> <frame>"──▶ seq 0 (presence, typing, read) ─▶ hub
//!                                 seq ≤ cursor ─▶ dropped (already delivered)
//!                                 seq > cursor + 1 ─▶ fill the gap from the stream ─▶ hub ─▶ this one
//! reconnect of the subscriber (failover), or a lag ─▶ catch up every topic from its cursor
//! ```
//!
//! Cursors (last sequence dispatched per topic) start at the topic's newest sequence when it is
//! subscribed (`subscribe` in the module root; a room's with the join that follows, which reads it) and
//! are dropped with the last local listener.

use super::Inner;
use crate::config::INBOX_CAP;
use crate::hub::{Topic, Wakes};
use fred::interfaces::EventInterface;
use std::collections::HashMap;
use std::sync::Arc;
use switchboard_runtime::report::chain;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tungstenite::Utf8Bytes;

/// Bus events handed to the hub before the writers they concern are woken: a batch is what the
/// subscriber has already received, up to this many.
const BATCH: usize = 256;

/// How often cursors of topics nobody listens to any more are dropped.
const CURSOR_SWEEP: std::time::Duration = std::time::Duration::from_secs(30);

impl Inner {
    /// The cursors, locked for a lookup or an update only: never across a round trip.
    pub(super) fn cursors(&self) -> std::sync::MutexGuard<'_, HashMap<Topic, u64>> {
        self.cursors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves `topic`'s cursor up to `seq` (never down).
    pub(super) fn advance(&self, topic: &Topic, seq: u64) {
        let mut cursors = self.cursors();
        let c = cursors.entry(topic.clone()).or_insert(seq);
        *c = (*c).max(seq);
    }

    /// Dispatches one sequenced event, filling a gap from the stream first and dropping duplicates.
    /// Only this task dispatches sequenced events, so reading the gap without holding the cursors
    /// keeps the order; other rooms' joins meanwhile are not held up.
    async fn dispatch_sequenced(
        &self,
        topic: Topic,
        seq: u64,
        frame: Utf8Bytes,
        wakes: &mut Wakes,
    ) {
        let last = self.cursors().get(&topic).copied();
        match last {
            Some(l) if seq <= l => return,
            Some(l) if seq > l + 1 => {
                // What is queued already goes out while the gap is read.
                wakes.wake();
                match self
                    .range_after(self.names.log_of(&topic), l, (seq - l - 1) as usize, true)
                    .await
                {
                    Ok(missing) => {
                        for m in missing.into_iter().filter(|m| m.seq > l && m.seq < seq) {
                            self.hub.dispatch_to(&topic, m.seq, &m.frame, wakes);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %chain(&e), "could not fill a gap from history")
                    }
                }
            }
            _ => {}
        }
        self.hub.dispatch_to(&topic, seq, &frame, wakes);
        self.advance(&topic, seq);
    }

    /// Hands one message of the subscriber to the hub (the writers it concerns wait in `wakes`).
    async fn on_message(&self, msg: fred::types::Message, wakes: &mut Wakes) {
        let Some(topic) = self.names.topic_of(&msg.channel) else {
            return;
        };
        let Some(bytes) = msg.value.into_bytes() else {
            return;
        };
        let Some(space) = bytes.iter().position(|b| *b == b' ') else {
            return;
        };
        let seq: u64 = std::str::from_utf8(&bytes[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let Ok(frame) = Utf8Bytes::try_from(bytes.slice(space + 1..)) else {
            return;
        };
        if seq == 0 {
            self.hub.dispatch_to(&topic, 0, &frame, wakes);
        } else {
            self.dispatch_sequenced(topic, seq, frame, wakes).await;
        }
    }

    /// After a reconnect or lag: deliver whatever was published while we were not listening.
    async fn catch_up(&self) {
        let topics: Vec<(Topic, u64)> = {
            let mut cursors = self.cursors();
            cursors.retain(|t, _| self.hub.has_listeners(t));
            cursors.iter().map(|(t, s)| (t.clone(), *s)).collect()
        };
        for (topic, last) in topics {
            match self
                .range_after(
                    self.names.log_of(&topic),
                    last,
                    self.history_cap.max(INBOX_CAP),
                    true,
                )
                .await
            {
                Ok(missing) => {
                    for m in missing {
                        self.hub.dispatch(&topic, m.seq, &m.frame);
                        self.advance(&topic, m.seq);
                    }
                }
                Err(e) => tracing::warn!(error = %chain(&e), topic = ?topic, "catch-up failed"),
            }
        }
    }

    /// The receiver task: runs until `shutdown` fires or the subscriber is gone.
    pub(super) async fn receive(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut messages = self.subscriber.message_rx();
        let mut reconnects = self.subscriber.reconnect_rx();
        let mut sweep = tokio::time::interval(CURSOR_SWEEP);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = sweep.tick() => {
                    self.cursors().retain(|t, _| self.hub.has_listeners(t));
                }
                r = reconnects.recv() => {
                    if r.is_err() && matches!(r, Err(RecvError::Closed)) {
                        return;
                    }
                    tracing::info!("bus reconnected; catching up from history");
                    self.catch_up().await;
                }
                m = messages.recv() => match m {
                    Ok(msg) => {
                        // This message and whatever else has arrived, then one wake per writer.
                        let mut wakes = Wakes::default();
                        self.on_message(msg, &mut wakes).await;
                        for _ in 1..BATCH {
                            match messages.try_recv() {
                                Ok(msg) => self.on_message(msg, &mut wakes).await,
                                Err(TryRecvError::Empty) => break,
                                Err(TryRecvError::Lagged(n)) => {
                                    wakes.wake();
                                    tracing::warn!(missed = n, "bus receiver lagged; catching up from history");
                                    self.catch_up().await;
                                    break;
                                }
                                Err(TryRecvError::Closed) => return,
                            }
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "bus receiver lagged; catching up from history");
                        self.catch_up().await;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}
