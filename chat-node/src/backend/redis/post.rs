//! The durable post: how a room message or direct message becomes stored, visible and published.
//!
//! ```text
//! post.lua (seq, append, dedup record[, publish])
//!   └─ --ack-replicas 0: published inside the script; done
//!   └─ --ack-replicas N: WAIT N ─▶ confirm.lua on the master we talk to now:
//!                        read the entry back, raise the visible mark, publish
//! ```
//!
//! The ack means "stored" (`PROTOCOL.md`): with replicas, only once they hold it, so no client ever sees
//! a message a failover can take back.

use super::keys::visible_key;
use super::replies::{parse_posted, to_u64};
use super::scripts::SCRIPTS;
use super::{Inner, unavailable};
use crate::backend::{Error, Post, Posted, Result};
use crate::config::{DEDUP_TTL, INBOX_CAP, INBOX_TTL, ROOM_TTL};
use crate::hub::Topic;
use crate::protocol::MessageHead;
use fred::interfaces::ServerInterface;

impl Inner {
    /// Stores `post` as a `kind` frame (`message` to a room, `dm` to an inbox) and publishes it.
    pub(super) async fn post(&self, kind: &str, post: Post) -> Result<Posted> {
        let (seq_key, log_key, cid_key, channel, cap, expire) = if kind == "message" {
            let cid = post.client_id.as_deref().unwrap_or("");
            (
                self.names.room(&post.target, "seq"),
                self.names.room(&post.target, "log"),
                self.names
                    .room(&post.target, &format!("cid:<{}>:{cid}", post.from)),
                self.names.channel(&Topic::room(&post.target)),
                self.history_cap,
                ROOM_TTL.as_secs(),
            )
        } else {
            let cid = post.client_id.as_deref().unwrap_or("");
            (
                self.names.user(&post.target, "dmseq"),
                self.names.user(&post.target, "inbox"),
                self.names
                    .user(&post.target, &format!("cid:<{}>:{cid}", post.from)),
                self.names.channel(&Topic::user(&post.target)),
                INBOX_CAP,
                INBOX_TTL.as_secs(),
            )
        };
        let has_cid = if post.client_id.is_some() { "1" } else { "0" };
        let replicas = self.durability.replicas;
        let publish_inside = if replicas == 0 { "1" } else { "0" };
        // The script writes seq and ts between these pieces: the frame's layout lives in `protocol`.
        let head = MessageHead::new(kind, &post.id);
        let v = self
            .eval(
                &SCRIPTS.post,
                vec![seq_key, log_key.clone(), cid_key],
                vec![
                    channel.clone(),
                    post.id,
                    post.tail,
                    cap.to_string(),
                    DEDUP_TTL.as_secs().to_string(),
                    has_cid.into(),
                    head.before_seq,
                    expire.to_string(),
                    publish_inside.into(),
                    head.before_ts,
                ],
            )
            .await?;
        let (posted, payload) = parse_posted(v)?;
        if replicas == 0 {
            return Ok(posted);
        }
        // Publish and ack only what replicas hold, so no client ever sees a message a failover can
        // take back. Publishes of one room from several nodes may now arrive out of order; receivers
        // fill gaps from the stream and drop what they already have. A post that is stored but not
        // confirmed stays unpublished: the client resends the same client_id, which finds it.
        let confirmed: i64 = self
            .client
            .wait(
                i64::from(replicas),
                self.durability.timeout.as_millis() as i64,
            )
            .await
            .map_err(unavailable)?;
        if confirmed < i64::from(replicas) {
            return Err(Error::NotDurable {
                wanted: replicas,
                confirmed: confirmed.max(0) as u32,
            });
        }
        // A duplicate's original may never have been published (its WAIT fell short): publish it now;
        // receivers drop sequences they already have.
        let payload = match payload {
            Some(p) => String::from_utf8(p.to_vec())
                .map_err(|_| Error::Protocol("frame is not UTF-8".into()))?,
            None => self
                .range_after(log_key.clone(), posted.seq.saturating_sub(1), 1, false)
                .await?
                .into_iter()
                .find(|f| f.seq == posted.seq)
                .map(|f| format!("{} {}", f.seq, f.frame.as_str()))
                .unwrap_or_default(),
        };
        let on_master = self
            .eval(
                &SCRIPTS.confirm,
                vec![log_key.clone(), visible_key(&log_key)],
                vec![
                    posted.seq.to_string(),
                    posted.id.clone(),
                    payload,
                    channel,
                    expire.to_string(),
                ],
            )
            .await?;
        if to_u64(&on_master) != 1 {
            return Err(Error::NotDurable {
                wanted: replicas,
                confirmed: 0,
            });
        }
        Ok(posted)
    }
}
