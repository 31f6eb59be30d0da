//! Key and channel names of one chat system (the table is in the [module overview](super)). Every name
//! sits under the cluster prefix of [`switchboard_redis::keys::Keys`]; room and user names are wrapped in
//! `<…>`, which names cannot contain, so no two keys collide.

use crate::hub::Topic;

/// Key and channel names of one chat system.
#[derive(Clone, Debug)]
pub(super) struct Names {
    pub(super) keys: switchboard_redis::keys::Keys,
    room_channel_prefix: String,
    user_channel_prefix: String,
}

impl Names {
    pub(super) fn new(keys: switchboard_redis::keys::Keys) -> Self {
        Self {
            room_channel_prefix: keys.key("ch:room:<"),
            user_channel_prefix: keys.key("ch:user:<"),
            keys,
        }
    }

    /// `room:<room>:what`.
    pub(super) fn room(&self, room: &str, what: &str) -> String {
        self.keys.key(&format!("room:<{room}>:{what}"))
    }

    /// `user:<user>:what`.
    pub(super) fn user(&self, user: &str, what: &str) -> String {
        self.keys.key(&format!("user:<{user}>:{what}"))
    }

    /// `rec:KEY`: a record of [`crate::backend::Backend::record_put`].
    pub(super) fn record(&self, key: &str) -> String {
        self.keys.key(&format!("rec:{key}"))
    }

    /// `due:LIST`: a due list (sorted set: member -> due time in ms).
    pub(super) fn due(&self, list: &str) -> String {
        self.keys.key(&format!("due:{list}"))
    }

    /// `cnt:KEY`: a windowed counter.
    pub(super) fn counter(&self, key: &str) -> String {
        self.keys.key(&format!("cnt:{key}"))
    }

    /// The pub/sub channel of a topic.
    pub(super) fn channel(&self, topic: &Topic) -> String {
        match topic {
            Topic::Room(r) => format!("{}{r}>", self.room_channel_prefix),
            Topic::User(u) => format!("{}{u}>", self.user_channel_prefix),
        }
    }

    /// The topic of a channel this node subscribed to.
    pub(super) fn topic_of(&self, channel: &str) -> Option<Topic> {
        if let Some(r) = channel.strip_prefix(&self.room_channel_prefix) {
            return r.strip_suffix('>').map(Topic::room);
        }
        channel
            .strip_prefix(&self.user_channel_prefix)
            .and_then(|u| u.strip_suffix('>'))
            .map(Topic::user)
    }

    /// The stream that holds a topic's sequenced messages: a room's log or a user's inbox.
    pub(super) fn log_of(&self, topic: &Topic) -> String {
        match topic {
            Topic::Room(r) => self.room(r, "log"),
            Topic::User(u) => self.user(u, "inbox"),
        }
    }
}

/// The key of a log's "visible" mark: the highest sequence confirmed by replicas (see `confirm.lua`).
pub(super) fn visible_key(log: &str) -> String {
    format!("{log}:visible")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip_and_never_collide() {
        let n = Names::new(switchboard_redis::keys::Keys::new("ns/demo"));
        for t in [Topic::room("a:b"), Topic::user("alice"), Topic::room("x")] {
            assert_eq!(n.topic_of(&n.channel(&t)), Some(t));
        }
        assert_ne!(n.room("a:cid:u", "seq"), n.room("a", "cid:<u>:seq"));
    }
}
