//! The server-side Lua scripts of the Redis backend, one `.lua` file each under `scripts/` (each file
//! opens with what its `KEYS` and `ARGV` are). They are sent once and called by their SHA afterwards
//! (`EVALSHA`, reloaded after a Redis restart or failover by `evalsha_with_reload`).

use fred::types::scripts::Script;
use std::sync::LazyLock;

/// Every script the backend calls.
pub(super) struct Scripts {
    pub(super) post: Script,
    pub(super) confirm: Script,
    pub(super) range_after: Script,
    pub(super) range_before: Script,
    pub(super) dm_state: Script,
    pub(super) set_read: Script,
    pub(super) raise: Script,
    pub(super) presence_leave: Script,
    pub(super) members: Script,
    pub(super) join: Script,
    pub(super) expire_presence: Script,
    pub(super) last_seen: Script,
    pub(super) record_delete_if: Script,
    pub(super) due_take: Script,
    pub(super) counter_add: Script,
}

/// The scripts, with their SHA computed once.
pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    post: Script::from_lua(include_str!("scripts/post.lua")),
    confirm: Script::from_lua(include_str!("scripts/confirm.lua")),
    range_after: Script::from_lua(include_str!("scripts/range_after.lua")),
    range_before: Script::from_lua(include_str!("scripts/range_before.lua")),
    dm_state: Script::from_lua(include_str!("scripts/dm_state.lua")),
    set_read: Script::from_lua(include_str!("scripts/set_read.lua")),
    raise: Script::from_lua(include_str!("scripts/raise.lua")),
    presence_leave: Script::from_lua(include_str!("scripts/presence_leave.lua")),
    members: Script::from_lua(include_str!("scripts/members.lua")),
    join: Script::from_lua(include_str!("scripts/join.lua")),
    expire_presence: Script::from_lua(include_str!("scripts/expire_presence.lua")),
    last_seen: Script::from_lua(include_str!("scripts/last_seen.lua")),
    record_delete_if: Script::from_lua(include_str!("scripts/record_delete_if.lua")),
    due_take: Script::from_lua(include_str!("scripts/due_take.lua")),
    counter_add: Script::from_lua(include_str!("scripts/counter_add.lua")),
});
