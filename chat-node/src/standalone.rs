//! Standalone mode: the node is its own registry — `/v1/assign` and `/v1/nodes` name this node — and
//! serves the web page.

use crate::node::Node;
use registry::api::{Avoid, Directory, DirectoryError};
use std::sync::Arc;
use switchboard_loadset::NodeEntry;

struct Local(Arc<Node>);

impl Local {
    fn entry(&self) -> NodeEntry {
        let s = &self.0.settings;
        let connections = self.0.connections();
        NodeEntry {
            id: s.id.clone(),
            url: s.url.clone(),
            connections,
            capacity: s.capacity,
            accepting: connections < s.capacity && self.0.ready(),
            live: true,
            stats: crate::membership::stats(&self.0),
        }
    }
}

impl Directory for Local {
    /// The one node, avoided or not: there is no other.
    async fn assign(&self, _: &Avoid) -> Result<Option<NodeEntry>, DirectoryError> {
        Ok(Some(self.entry()).filter(|e| e.accepting))
    }

    async fn nodes(&self) -> Result<Vec<NodeEntry>, DirectoryError> {
        Ok(vec![self.entry()])
    }
}

/// `/v1/assign`, `/v1/nodes` and the web page, for a standalone node.
pub fn router(node: Arc<Node>) -> axum::Router {
    let origins = node.settings.origins.clone();
    registry::api::router(Arc::new(Local(node)), origins).merge(registry::web::router())
}
