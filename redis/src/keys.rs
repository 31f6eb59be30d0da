//! Redis key names of one chat system, all under one per-cluster prefix so several chat systems can share
//! one Redis and so one system's keys can be found and deleted together.
//!
//! Every key is `sb:{<cluster-id>}:<suffix>`. The braces make the cluster id a Redis Cluster hash tag, so
//! all keys of one chat system live in the same slot and multi-key scripts stay valid on a cluster. The
//! cluster id is escaped (see [`Keys::new`]) so it can contain neither braces nor glob characters nor `:`.
//!
//! Keys of the load-set schema (owned by the `switchboard-loadset` crate):
//!
//! | key | type | content |
//! |---|---|---|
//! | `sb:{id}:loadset` | sorted set | member = node id, score = the node's connection count (+1 per assignment until the node reports again) |
//! | `sb:{id}:nodes` | hash | field = node id, value = JSON `NodeInfo` `{"id","url","capacity"}` |
//! | `sb:{id}:heartbeats` | sorted set | member = node id, score = expiry time in ms of the Redis clock (every node, both membership modes) |
//! | `sb:{id}:operator` | string with expiry | present while an operator holds membership (its lease, renewed on every load-set sync) |
//! | `sb:{id}:exposed` | hash | field = node id, value = the URL clients outside the cluster open (written by the operator when it exposes each node; preferred by assignments) |
//!
//! Other crates add their own keys with [`Keys::key`] (chat-node: room history, channels, presence, ...);
//! they document them next to the code that writes them.

/// Key namespace of one chat system. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    cluster_id: String,
    prefix: String,
}

/// Cluster id used when none is given.
pub const DEFAULT_CLUSTER_ID: &str = "default";

impl Keys {
    /// Keys for the chat system `cluster_id` (e.g. `default`, or `namespace/name` on Kubernetes).
    ///
    /// Letters, digits and `-_./` are kept; every other byte (including `{}`, `*?[]\`, `:`, `%` and
    /// whitespace) is written as `%XX`, so distinct ids always give distinct, glob-safe prefixes. An empty
    /// id means [`DEFAULT_CLUSTER_ID`].
    pub fn new(cluster_id: &str) -> Self {
        let cluster_id = if cluster_id.is_empty() {
            DEFAULT_CLUSTER_ID
        } else {
            cluster_id
        };
        let mut escaped = String::with_capacity(cluster_id.len());
        for byte in cluster_id.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'/') {
                escaped.push(char::from(byte));
            } else {
                escaped.push_str(&format!("%{byte:02X}"));
            }
        }
        Self {
            cluster_id: cluster_id.to_owned(),
            prefix: format!("sb:{{{escaped}}}:"),
        }
    }

    /// The cluster id these keys were built from (unescaped).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The prefix every key of this chat system starts with, e.g. `sb:{default}:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `prefix + suffix`: a key of this chat system.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// The load set (sorted set: node id -> connection count).
    pub fn load_set(&self) -> String {
        self.key("loadset")
    }

    /// The node table (hash: node id -> JSON node info).
    pub fn node_table(&self) -> String {
        self.key("nodes")
    }

    /// Heartbeat expiries (sorted set: node id -> expiry in ms), written by every node.
    pub fn heartbeats(&self) -> String {
        self.key("heartbeats")
    }

    /// The operator's membership lease (a string that expires unless the operator renews it).
    pub fn membership_lease(&self) -> String {
        self.key("operator")
    }

    /// External URLs of exposed nodes (hash: node id -> URL), written by the operator.
    pub fn exposed(&self) -> String {
        self.key("exposed")
    }

    /// A `SCAN MATCH` pattern that matches exactly the keys of this chat system.
    pub fn scan_pattern(&self) -> String {
        format!("{}*", escape_glob(&self.prefix))
    }
}

impl Default for Keys {
    fn default() -> Self {
        Self::new(DEFAULT_CLUSTER_ID)
    }
}

/// Escapes Redis glob metacharacters (`*?[]\`) so `s` matches only itself in `SCAN MATCH` / `KEYS`.
pub fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_cluster_prefix() {
        let keys = Keys::new("default");
        assert_eq!(keys.prefix(), "sb:{default}:");
        assert_eq!(keys.load_set(), "sb:{default}:loadset");
        assert_eq!(keys.node_table(), "sb:{default}:nodes");
        assert_eq!(keys.heartbeats(), "sb:{default}:heartbeats");
        assert_eq!(keys.membership_lease(), "sb:{default}:operator");
        assert_eq!(keys.key("room:x"), "sb:{default}:room:x");
    }

    #[test]
    fn namespace_and_name_are_kept_readable() {
        assert_eq!(Keys::new("chat/demo").prefix(), "sb:{chat/demo}:");
    }

    #[test]
    fn braces_globs_and_colons_are_escaped() {
        let keys = Keys::new("a}b{*?[]\\:%");
        assert_eq!(keys.prefix(), "sb:{a%7Db%7B%2A%3F%5B%5D%5C%3A%25}:");
        assert_eq!(keys.cluster_id(), "a}b{*?[]\\:%");
        assert_eq!(keys.scan_pattern(), "sb:{a%7Db%7B%2A%3F%5B%5D%5C%3A%25}:*");
    }

    #[test]
    fn distinct_ids_never_share_a_prefix() {
        let ids = ["a", "a:", "a%3A", "a/b", "a.b", "ab", "A", ""];
        let prefixes: std::collections::BTreeSet<String> = ids
            .iter()
            .map(|id| Keys::new(id).prefix().to_owned())
            .collect();
        // "" is the default cluster, which is distinct from all the others here.
        assert_eq!(prefixes.len(), ids.len());
        for (i, a) in prefixes.iter().enumerate() {
            for b in prefixes.iter().skip(i + 1) {
                assert!(!a.starts_with(b.as_str()) && !b.starts_with(a.as_str()));
            }
        }
    }

    #[test]
    fn empty_id_is_the_default_cluster() {
        assert_eq!(Keys::new(""), Keys::default());
    }

    #[test]
    fn glob_escaping_covers_metacharacters() {
        assert_eq!(escape_glob("a*b?c[d]e\\"), "a\\*b\\?c\\[d\\]e\\\\");
    }
}
