//! What the load-set sync last saw of each chat system, and how the ChatCluster controller learns that it
//! changed.
//!
//! ```text
//! loadset_sync ──update(cc, Observation)──▶ Observations ──get(cluster id)──▶ reconcile (status)
//!              ──set_connections(pod → n)──▶     │       ──connections────▶ reconcile (pod-deletion-cost
//!                                                │                            before a scale-down)
//!                                                └─ changed? ObjectRef ─▶ stream ─▶ reconcile_on
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::Stream;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use crate::crd::ChatCluster;

/// What the load-set sync last saw of one chat system; the reconciler puts it in the status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Load-set size after the last successful sync.
    pub members: Option<i32>,
    /// `host:port` of the current Redis master.
    pub current_master: Option<String>,
    /// Why the last sync could not use Redis.
    pub redis_error: Option<String>,
}

/// Observations of every chat system, shared with the reconciler, which is told when one changes.
/// Connection counts per chat-node pod are kept beside them without waking the reconciler (they change
/// all the time; the reconciler reads them only before a scale-down).
#[derive(Debug)]
pub struct Observations {
    map: Mutex<HashMap<String, Observation>>,
    connections: Mutex<HashMap<String, BTreeMap<String, u64>>>,
    changed: mpsc::UnboundedSender<ObjectRef<ChatCluster>>,
}

impl Observations {
    /// Empty observations and the stream of ChatClusters whose observation changed (for the ChatCluster
    /// controller's `reconcile_on`).
    pub fn new() -> (
        Arc<Self>,
        impl Stream<Item = ObjectRef<ChatCluster>> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        (
            Arc::new(Self {
                map: Mutex::new(HashMap::new()),
                connections: Mutex::new(HashMap::new()),
                changed: tx,
            }),
            stream,
        )
    }

    /// The observation of `cluster_id` (empty when none yet).
    pub fn get(&self, cluster_id: &str) -> Observation {
        self.map
            .lock()
            .ok()
            .and_then(|m| m.get(cluster_id).cloned())
            .unwrap_or_default()
    }

    /// Records `new` for `cc`; returns the previous one and tells the reconciler if it changed.
    pub fn update(&self, cc: &ChatCluster, new: Observation) -> Observation {
        let previous = match self.map.lock() {
            Ok(mut map) => map.insert(cc.cluster_id(), new.clone()).unwrap_or_default(),
            Err(_) => return Observation::default(),
        };
        if previous != new {
            let _ = self.changed.send(ObjectRef::from_obj(cc));
        }
        previous
    }

    /// Records the connection count of each chat-node pod (by pod name) of `cluster_id`, as the
    /// nodes last reported them to the load set. Does not wake the reconciler.
    pub fn set_connections(&self, cluster_id: &str, by_pod: BTreeMap<String, u64>) {
        if let Ok(mut map) = self.connections.lock() {
            map.insert(cluster_id.to_owned(), by_pod);
        }
    }

    /// The connection count of each chat-node pod of `cluster_id` (empty when none yet).
    pub fn connections(&self, cluster_id: &str) -> BTreeMap<String, u64> {
        self.connections
            .lock()
            .ok()
            .and_then(|m| m.get(cluster_id).cloned())
            .unwrap_or_default()
    }

    /// Drops what was seen of `cluster_id` (its ChatCluster is being deleted).
    pub fn forget(&self, cluster_id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(cluster_id);
        }
        if let Ok(mut map) = self.connections.lock() {
            map.remove(cluster_id);
        }
    }

    /// Drops what was seen of every chat system whose cluster id `live` does not hold (ChatClusters that
    /// were deleted, possibly while no sync saw them go).
    pub fn retain(&self, live: &HashSet<String>) {
        if let Ok(mut map) = self.map.lock() {
            map.retain(|id, _| live.contains(id));
        }
        if let Ok(mut map) = self.connections.lock() {
            map.retain(|id, _| live.contains(id));
        }
    }

    /// How many chat systems have an observation.
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or_default()
    }

    /// Whether no chat system has an observation.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[test]
    fn retain_drops_the_observations_of_deleted_chat_clusters() {
        let (observations, _changed) = Observations::new();
        for name in ["a", "b", "c"] {
            observations.update(&ChatCluster::test(name), Observation::default());
        }
        assert_eq!(observations.len(), 3);
        observations.set_connections(
            &ChatCluster::test("a").cluster_id(),
            BTreeMap::from([("pod".to_owned(), 3)]),
        );
        let live = HashSet::from([ChatCluster::test("b").cluster_id()]);
        observations.retain(&live);
        assert_eq!(observations.len(), 1);
        assert!(
            observations
                .connections(&ChatCluster::test("a").cluster_id())
                .is_empty()
        );
    }

    #[tokio::test]
    async fn only_a_changed_observation_wakes_the_reconciler() {
        let (observations, changed) = Observations::new();
        let mut changed = Box::pin(changed);
        let cc = ChatCluster::test("demo");
        let seen = Observation {
            members: Some(2),
            ..Observation::default()
        };
        assert_eq!(
            observations.update(&cc, seen.clone()),
            Observation::default()
        );
        assert_eq!(changed.next().await, Some(ObjectRef::from_obj(&cc)));
        assert_eq!(observations.update(&cc, seen.clone()), seen);
        assert_eq!(observations.get(&cc.cluster_id()), seen);
        observations.forget(&cc.cluster_id());
        assert_eq!(observations.get(&cc.cluster_id()), Observation::default());
        assert!(observations.is_empty());
        drop(observations);
        assert_eq!(
            changed.next().await,
            None,
            "the unchanged update sent nothing"
        );
    }
}
