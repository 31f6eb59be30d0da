//! The registry's HTTP side, as a client needs it: `GET /v1/assign` names the node to open,
//! `GET /v1/nodes` lists the load set. A standalone chat-node answers both itself.
//!
//! ```text
//!   assign(base) ──GET {base}/v1/assign──▶ 200 Assignment { node, url }
//!                                        ─▶ 503 + Retry-After ──▶ Error::Unavailable
//!   assign_avoiding(base, lost) ──GET {base}/v1/assign?avoid=lost──▶ (a node other than `lost`
//!                                                                     while another has room)
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::{Error, Result};

/// The registry's answer to `GET /v1/assign`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Assignment {
    /// Node id.
    pub node: String,
    /// WebSocket URL to open.
    pub url: String,
    /// The node's connection count as the registry saw it.
    #[serde(default)]
    pub connections: u64,
    /// The node's capacity.
    #[serde(default)]
    pub capacity: u64,
}

/// One entry of `GET /v1/nodes`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// Advertised WebSocket URL.
    pub url: String,
    /// Connection count (load-set score).
    #[serde(default)]
    pub connections: u64,
    /// Capacity.
    #[serde(default)]
    pub capacity: u64,
    /// Whether the node takes new sessions.
    #[serde(default = "yes")]
    pub accepting: bool,
    /// Whether its heartbeat is live (a member that stopped beating is listed until it is removed).
    #[serde(default = "yes")]
    pub live: bool,
}

fn yes() -> bool {
    true
}

/// Ask a registry (or a standalone node) which node to open: `GET {base}/v1/assign`.
pub async fn assign(registry_base_url: &str) -> Result<Assignment> {
    assign_via(&http_client(), registry_base_url, &[]).await
}

/// As [`assign`], asking the registry not to name the nodes in `avoid` (ones this client just lost or
/// could not open) while another node has room.
pub async fn assign_avoiding(registry_base_url: &str, avoid: &[&str]) -> Result<Assignment> {
    assign_via(&http_client(), registry_base_url, avoid).await
}

/// [`assign_avoiding`] over `http`, a client kept across calls (as a browser keeps one: a load test
/// that built one per request would measure that instead of the registry).
pub async fn assign_via(
    http: &reqwest::Client,
    registry_base_url: &str,
    avoid: &[&str],
) -> Result<Assignment> {
    let list = avoid.join(",");
    let query: &[(&str, &str)] = if avoid.is_empty() {
        &[]
    } else {
        &[("avoid", &list)]
    };
    get_json(http, registry_base_url, "/v1/assign", query).await
}

/// List the load set: `GET {base}/v1/nodes`.
pub async fn nodes(registry_base_url: &str) -> Result<Vec<NodeInfo>> {
    #[derive(Deserialize)]
    struct Nodes {
        nodes: Vec<NodeInfo>,
    }
    let nodes: Nodes = get_json(&http_client(), registry_base_url, "/v1/nodes", &[]).await?;
    Ok(nodes.nodes)
}

/// `GET {base}{path}?{query}` as JSON; any status but 200 is [`Error::Unavailable`] with the body and
/// the `Retry-After` the registry gave.
async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    query: &[(&str, &str)],
) -> Result<T> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let response = http
        .get(&url)
        .query(query)
        .send()
        .await
        .map_err(|source| Error::Http {
            url: url.clone(),
            source,
        })?;
    let status = response.status().as_u16();
    if status != 200 {
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = response.text().await.unwrap_or_default();
        return Err(Error::Unavailable {
            url,
            status,
            retry_after,
            body,
        });
    }
    response
        .json()
        .await
        .map_err(|source| Error::Http { url, source })
}

/// A fresh client per call: a client shared across Tokio runtimes (one per test) would keep pooled
/// connections bound to a runtime that is gone.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap_or_default()
}
