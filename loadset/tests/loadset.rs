//! `switchboard_loadset` against a real `redis-server`: assignment, membership modes, the operator's
//! membership lease, heartbeats and pruning, isolation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::interfaces::{
    HashesInterface, KeysInterface, LuaInterface, ServerInterface, SortedSetsInterface,
};
use switchboard_loadset::{Beat, LoadSet, NodeInfo, SyncReport};
use switchboard_redis as redis;
use switchboard_redis::keys::Keys;
use switchboard_testkit::RedisServer;

struct Fixture {
    _server: RedisServer,
    client: Client,
}

impl Fixture {
    async fn start() -> Self {
        let server = RedisServer::start().await.expect("redis");
        let client = redis::connect(&server.redis_args()).await.expect("connect");
        Self {
            _server: server,
            client,
        }
    }

    fn load_set(&self, cluster_id: &str) -> LoadSet {
        LoadSet::new(self.client.clone(), Keys::new(cluster_id))
    }

    /// A load set whose membership an operator holds (its lease taken for a minute).
    async fn held_load_set(&self, cluster_id: &str) -> LoadSet {
        let set = self.load_set(cluster_id);
        set.hold_membership(Duration::from_secs(60))
            .await
            .expect("lease");
        set
    }
}

fn info(id: &str, capacity: u64) -> NodeInfo {
    NodeInfo {
        id: id.to_owned(),
        url: format!("ws://{id}.test/ws"),
        capacity,
        stats: Default::default(),
    }
}

/// Registers `id` the way a self-membership node does.
async fn self_node(set: &LoadSet, id: &str, connections: u64, capacity: u64) {
    set.publish_node_info(&info(id, capacity))
        .await
        .expect("publish");
    set.heartbeat(id, connections, Duration::from_secs(60))
        .await
        .expect("heartbeat");
}

/// Registers `id` the way the operator + an operator-membership node do.
async fn operator_node(set: &LoadSet, id: &str, connections: u64, capacity: u64) {
    set.publish_node_info(&info(id, capacity))
        .await
        .expect("publish");
    set.add_member(id).await.expect("add");
    assert!(set.update_score(id, connections).await.expect("score"));
}

/// Announces `id` the way an operator-membership node does, and returns what its heartbeat found.
async fn operator_mode_beat(set: &LoadSet, id: &str, connections: u64, capacity: u64) -> Beat {
    set.publish_node_info(&info(id, capacity))
        .await
        .expect("publish");
    set.operator_heartbeat(id, connections, Duration::from_secs(60))
        .await
        .expect("heartbeat")
}

/// The ids `assign` names in `n` tries.
async fn assigned(set: &LoadSet, n: usize) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for _ in 0..n {
        if let Some(entry) = set.assign().await.expect("assign") {
            ids.insert(entry.id);
        }
    }
    ids
}

fn ids(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

#[tokio::test]
async fn assign_picks_the_least_loaded_node() {
    let fx = Fixture::start().await;
    let set = fx.load_set("least");
    self_node(&set, "busy", 50, 100).await;
    self_node(&set, "idle", 3, 100).await;
    operator_node(&set, "medium", 20, 100).await;

    let entry = set.assign().await.expect("assign").expect("a node");
    assert_eq!(entry.id, "idle");
    assert_eq!(entry.url, "ws://idle.test/ws");
    assert_eq!(entry.connections, 3);
    assert_eq!(entry.capacity, 100);
    assert!(entry.accepting);
}

#[tokio::test]
async fn an_avoided_node_is_assigned_only_when_no_other_has_room() {
    let fx = Fixture::start().await;
    let set = fx.load_set("avoid");
    self_node(&set, "dead", 0, 100).await;
    self_node(&set, "busy", 40, 100).await;
    self_node(&set, "full", 100, 100).await;
    let avoid = |ids: &[&str]| ids.iter().map(|&i| i.to_owned()).collect::<Vec<_>>();
    for _ in 0..5 {
        let entry = set
            .assign_avoiding(&avoid(&["dead"]))
            .await
            .expect("assign");
        assert_eq!(entry.expect("a node").id, "busy");
    }
    let entry = set
        .assign_avoiding(&avoid(&["dead", "busy"]))
        .await
        .expect("assign");
    assert_eq!(
        entry.expect("a node").id,
        "dead",
        "every node with room avoided: the least loaded of them"
    );
    let entry = set.assign().await.expect("assign");
    assert_eq!(entry.expect("a node").id, "dead", "nothing avoided");
}

#[tokio::test]
async fn a_burst_of_assignments_spreads_over_equal_nodes() {
    let fx = Fixture::start().await;
    let set = fx.load_set("spread");
    for id in ["a", "b", "c"] {
        self_node(&set, id, 0, 1000).await;
    }
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..100 {
        let entry = set.assign().await.expect("assign").expect("a node");
        *counts.entry(entry.id).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "every node gets some: {counts:?}");
    // Each assignment adds 1 to the chosen score and the lowest score wins, so the burst stays level.
    for (id, n) in &counts {
        assert!((33..=34).contains(n), "{id} got {n}: {counts:?}");
    }
    let scores: Vec<u64> = set
        .nodes()
        .await
        .expect("nodes")
        .iter()
        .map(|n| n.connections)
        .collect();
    assert_eq!(scores.iter().sum::<u64>(), 100);
}

#[tokio::test]
async fn ties_are_broken_at_random() {
    let fx = Fixture::start().await;
    let mut first_picks = BTreeSet::new();
    for round in 0..40 {
        let set = fx.load_set(&format!("ties-{round}"));
        for id in ["a", "b", "c"] {
            self_node(&set, id, 5, 10).await;
        }
        first_picks.insert(set.assign().await.expect("assign").expect("node").id);
        if first_picks.len() == 3 {
            return;
        }
    }
    panic!("the first pick among equal nodes never varied: {first_picks:?}");
}

#[tokio::test]
async fn capacity_is_respected() {
    let fx = Fixture::start().await;
    let set = fx.load_set("capacity");
    self_node(&set, "full", 10, 10).await;
    self_node(&set, "small", 0, 2).await;

    for _ in 0..2 {
        assert_eq!(
            set.assign().await.expect("assign").expect("room").id,
            "small"
        );
    }
    assert_eq!(set.assign().await.expect("assign"), None);
    let nodes = set.nodes().await.expect("nodes");
    assert!(nodes.iter().all(|n| !n.accepting), "{nodes:?}");

    // A node reporting fewer connections has room again.
    set.heartbeat("full", 9, Duration::from_secs(60))
        .await
        .expect("heartbeat");
    assert_eq!(
        set.assign().await.expect("assign").expect("room").id,
        "full"
    );
}

#[tokio::test]
async fn members_without_node_info_are_skipped() {
    let fx = Fixture::start().await;
    let set = fx.load_set("no-info");
    set.add_member("ghost").await.expect("add");
    assert_eq!(set.assign().await.expect("assign"), None);
    self_node(&set, "real", 100, 1000).await;
    assert_eq!(
        set.assign().await.expect("assign").expect("node").id,
        "real"
    );

    let nodes = set.nodes().await.expect("nodes");
    let ghost = nodes.iter().find(|n| n.id == "ghost").expect("listed");
    assert_eq!(
        (ghost.url.as_str(), ghost.capacity, ghost.accepting),
        ("", 0, false)
    );
}

#[tokio::test]
async fn an_expired_heartbeat_is_pruned() {
    let fx = Fixture::start().await;
    let set = fx.load_set("stale");
    set.publish_node_info(&info("dead", 100))
        .await
        .expect("publish");
    set.heartbeat("dead", 0, Duration::from_millis(200))
        .await
        .expect("heartbeat");
    operator_node(&set, "managed", 50, 100).await;
    assert_eq!(
        set.assign().await.expect("assign").expect("node").id,
        "dead"
    );

    // Stop heartbeating "dead": within the ttl it disappears; the operator-managed node (no heartbeat)
    // is never pruned.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let entry = set.assign().await.expect("assign").expect("node");
        if entry.id == "managed" {
            break;
        }
        assert!(Instant::now() < deadline, "stale node still assigned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: Vec<String> = set
        .nodes()
        .await
        .expect("nodes")
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, vec!["managed"]);
    assert_eq!(
        set.members().await.expect("members"),
        BTreeSet::from(["managed".to_owned()])
    );

    // A node that comes back (e.g. after a pause) re-registers, node info included, with one heartbeat.
    set.heartbeat("dead", 0, Duration::from_secs(60))
        .await
        .expect("heartbeat");
    assert_eq!(
        set.assign().await.expect("assign").expect("node").id,
        "dead"
    );
}

#[tokio::test]
async fn operator_score_updates_never_re_add_a_member() {
    let fx = Fixture::start().await;
    let set = fx.load_set("operator");
    operator_node(&set, "n1", 4, 10).await;
    assert!(set.remove_member("n1").await.expect("remove"));

    // A late write from the dying node: no member, no node info, nothing assignable.
    assert!(!set.update_score("n1", 1).await.expect("update"));
    assert!(set.members().await.expect("members").is_empty());
    assert!(set.nodes().await.expect("nodes").is_empty());
    assert_eq!(set.assign().await.expect("assign"), None);

    // Re-added by the operator: the node's next score update restores its node info.
    assert!(set.add_member("n1").await.expect("add"));
    assert!(!set.add_member("n1").await.expect("add is NX"));
    assert!(set.update_score("n1", 2).await.expect("update"));
    let entry = set.assign().await.expect("assign").expect("node");
    assert_eq!((entry.id.as_str(), entry.connections), ("n1", 2));
}

#[tokio::test]
async fn sync_members_adds_and_removes_with_node_info() {
    let fx = Fixture::start().await;
    let set = fx.load_set("sync");
    operator_node(&set, "old", 0, 10).await;
    operator_node(&set, "kept", 0, 10).await;
    let desired: BTreeSet<String> = ["kept", "new"].into_iter().map(String::from).collect();

    let report = set.sync_members(&desired).await.expect("sync");
    assert_eq!(
        report,
        SyncReport {
            added: vec!["new".into()],
            removed: vec!["old".into()],
        }
    );
    assert_eq!(set.members().await.expect("members"), desired);
    let table: Vec<String> = fx
        .client
        .hkeys(set.keys().node_table())
        .await
        .expect("hkeys");
    assert_eq!(table, vec!["kept"], "removed members lose their node info");
    assert_eq!(
        set.sync_members(&desired).await.expect("sync"),
        SyncReport::default()
    );
}

#[tokio::test]
async fn deregister_removes_every_trace() {
    let fx = Fixture::start().await;
    let set = fx.load_set("drain");
    self_node(&set, "n1", 0, 10).await;
    set.deregister("n1").await.expect("deregister");
    for key in [
        set.keys().load_set(),
        set.keys().node_table(),
        set.keys().heartbeats(),
    ] {
        assert!(
            !fx.client
                .exists::<bool, _>(key.as_str())
                .await
                .expect("exists"),
            "{key} left"
        );
    }
    assert_eq!(set.assign().await.expect("assign"), None);
}

#[tokio::test]
async fn two_cluster_ids_never_see_each_other() {
    let fx = Fixture::start().await;
    let a = fx.load_set("ns/a");
    let b = fx.load_set("ns/b");
    self_node(&a, "node-a", 0, 10).await;
    operator_node(&b, "node-b", 0, 10).await;

    assert_eq!(
        a.assign().await.expect("assign").expect("node").id,
        "node-a"
    );
    assert_eq!(
        b.assign().await.expect("assign").expect("node").id,
        "node-b"
    );
    let ids = |nodes: Vec<switchboard_loadset::NodeEntry>| {
        nodes.into_iter().map(|n| n.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(a.nodes().await.expect("nodes")), vec!["node-a"]);
    assert_eq!(ids(b.nodes().await.expect("nodes")), vec!["node-b"]);
    b.sync_members(&BTreeSet::new())
        .await
        .expect("sync b to nothing");
    assert_eq!(ids(a.nodes().await.expect("nodes")), vec!["node-a"]);
}

#[tokio::test]
async fn delete_all_removes_only_its_prefix() {
    let fx = Fixture::start().await;
    // Glob characters in the id must not widen the match to other clusters.
    let doomed = fx.load_set("team*");
    let neighbour = fx.load_set("team-b");
    for set in [&doomed, &neighbour] {
        self_node(set, "n", 0, 10).await;
        for i in 0..600 {
            fx.client
                .set::<(), _, _>(set.keys().key(&format!("room:{i}")), "x", None, None, false)
                .await
                .expect("set");
        }
    }
    fx.client
        .set::<(), _, _>("unrelated", "x", None, None, false)
        .await
        .expect("set");

    let deleted = doomed.delete_all().await.expect("delete_all");
    assert_eq!(deleted, 603);
    assert!(doomed.nodes().await.expect("nodes").is_empty());
    let remaining: u64 = fx.client.dbsize().await.expect("dbsize");
    assert_eq!(remaining, 603 + 1);
    assert_eq!(
        neighbour.assign().await.expect("assign").expect("node").id,
        "n"
    );
}

#[tokio::test]
async fn scripts_are_reloaded_after_script_flush() {
    let fx = Fixture::start().await;
    let set = fx.load_set("noscript");
    self_node(&set, "n", 0, 10).await;
    assert!(set.assign().await.expect("assign").is_some());
    fx.client.script_flush(false).await.expect("flush");
    assert!(
        set.assign()
            .await
            .expect("assign after SCRIPT FLUSH")
            .is_some()
    );
    set.heartbeat("n", 0, Duration::from_secs(5))
        .await
        .expect("heartbeat after flush");
}

#[tokio::test]
async fn corrupt_node_info_is_an_error_not_a_panic() {
    let fx = Fixture::start().await;
    let set = fx.load_set("corrupt");
    set.add_member("n").await.expect("add");
    fx.client
        .hset::<(), _, _>(set.keys().node_table(), ("n", "{not json"))
        .await
        .expect("hset");
    // assign skips it (the script cannot decode it); nodes reports it.
    assert_eq!(set.assign().await.expect("assign"), None);
    let error = set.nodes().await.expect_err("corrupt entry");
    assert!(
        matches!(error, switchboard_loadset::Error::CorruptEntry { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn node_list_carries_the_activity_a_node_reports() {
    let fx = Fixture::start().await;
    let set = fx.load_set("stats");
    self_node(&set, "a", 1, 10).await;
    let mut busy = info("a", 10);
    busy.stats = switchboard_loadset::NodeStats {
        rooms: 3,
        messages: 120,
        deliveries: 900,
    };
    set.publish_node_info(&busy).await.expect("publish");
    let nodes = set.nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].stats, busy.stats);
}

#[tokio::test]
async fn while_the_operator_holds_membership_a_node_waits_to_be_added() {
    let fx = Fixture::start().await;
    let set = fx.held_load_set("lease-held").await;
    assert_eq!(operator_mode_beat(&set, "new", 0, 10).await, Beat::Waiting);
    assert!(set.members().await.expect("members").is_empty());
    assert_eq!(set.assign().await.expect("assign"), None);

    assert!(set.add_member("new").await.expect("operator adds"));
    assert_eq!(operator_mode_beat(&set, "new", 3, 10).await, Beat::Member);
    let entry = set.assign().await.expect("assign").expect("node");
    assert_eq!((entry.id.as_str(), entry.connections), ("new", 3));

    // Removed by the operator (pod not ready): its next beats never bring it back.
    assert!(set.remove_member("new").await.expect("remove"));
    assert_eq!(operator_mode_beat(&set, "new", 0, 10).await, Beat::Waiting);
    assert!(set.members().await.expect("members").is_empty());
}

#[tokio::test]
async fn without_an_operator_a_ready_node_adds_itself() {
    let fx = Fixture::start().await;
    let set = fx.load_set("lease-absent");
    assert_eq!(operator_mode_beat(&set, "n1", 0, 10).await, Beat::Added);
    assert_eq!(operator_mode_beat(&set, "n1", 2, 10).await, Beat::Member);
    assert_eq!(assigned(&set, 3).await, ids(&["n1"]));

    // The lease lapses when the operator stops renewing it: nodes add themselves again.
    set.hold_membership(Duration::from_millis(200))
        .await
        .expect("short lease");
    assert_eq!(operator_mode_beat(&set, "n2", 0, 10).await, Beat::Waiting);
    let deadline = Instant::now() + Duration::from_secs(10);
    while operator_mode_beat(&set, "n2", 0, 10).await != Beat::Added {
        assert!(Instant::now() < deadline, "the lease never lapsed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(set.members().await.expect("members"), ids(&["n1", "n2"]));
}

#[tokio::test]
async fn a_member_that_stopped_beating_is_skipped_and_kept_for_the_operator_to_remove() {
    let fx = Fixture::start().await;
    let set = fx.held_load_set("lease-stale").await;
    set.sync_members(&ids(&["live", "gone"]))
        .await
        .expect("operator adds both");
    assert_eq!(
        operator_mode_beat(&set, "live", 50, 100).await,
        Beat::Member
    );
    assert_eq!(operator_mode_beat(&set, "gone", 0, 100).await, Beat::Member);
    assert_eq!(
        set.assign().await.expect("assign").expect("node").id,
        "gone",
        "the least loaded one, while it beats"
    );
    set.leave("gone").await.expect("leave");

    // Least loaded, but its heartbeat expired: never assigned, listed as not live, still a member.
    assert_eq!(assigned(&set, 10).await, ids(&["live"]));
    let nodes = set.nodes().await.expect("nodes");
    let gone = nodes.iter().find(|n| n.id == "gone").expect("still listed");
    assert!(!gone.live && !gone.accepting, "{gone:?}");
    assert!(
        nodes
            .iter()
            .any(|n| n.id == "live" && n.live && n.accepting)
    );
    assert_eq!(
        set.members().await.expect("members"),
        ids(&["live", "gone"])
    );

    // Once the lease is gone (operator down), the heartbeat has the last word: pruned.
    fx.client
        .del::<(), _>(set.keys().membership_lease())
        .await
        .expect("del lease");
    let listed = set.nodes().await.expect("nodes");
    assert!(listed.len() == 1 && listed[0].id == "live", "{listed:?}");
    assert_eq!(set.members().await.expect("members"), ids(&["live"]));
}

#[tokio::test]
async fn expired_heartbeats_of_nodes_never_added_are_cleaned_up_while_the_lease_is_held() {
    let fx = Fixture::start().await;
    let set = fx.held_load_set("lease-clean").await;
    assert_eq!(
        operator_mode_beat(&set, "never", 0, 10).await,
        Beat::Waiting
    );
    set.leave("never").await.expect("leave");
    assert!(set.nodes().await.expect("nodes").is_empty());
    let beat: Option<f64> = fx
        .client
        .zscore(set.keys().heartbeats(), "never")
        .await
        .expect("zscore");
    assert_eq!(beat, None, "no heartbeat entry left behind");
    let table: Vec<String> = fx
        .client
        .hkeys(set.keys().node_table())
        .await
        .expect("hkeys");
    assert!(table.is_empty(), "no node info left behind: {table:?}");
}

/// A node the operator exposes outside the cluster is handed out at its external URL; clearing the map
/// hands out the node's own URL again.
#[tokio::test]
async fn exposed_nodes_are_assigned_at_their_external_url() {
    let f = Fixture::start().await;
    let set = f.load_set("exposed");
    self_node(&set, "n1", 0, 10).await;
    let own = set.assign().await.expect("assign").expect("a node");
    assert_eq!(own.url, "ws://n1.test/ws");
    set.set_exposed(&BTreeMap::from([(
        "n1".to_owned(),
        "ws://203.0.113.7:30001/ws".to_owned(),
    )]))
    .await
    .expect("expose");
    let outside = set.assign().await.expect("assign").expect("a node");
    assert_eq!(
        (outside.id.as_str(), outside.url.as_str()),
        ("n1", "ws://203.0.113.7:30001/ws")
    );
    set.set_exposed(&BTreeMap::new()).await.expect("clear");
    let own = set.assign().await.expect("assign").expect("a node");
    assert_eq!(own.url, "ws://n1.test/ws");
}
