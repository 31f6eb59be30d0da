//! The placement HTTP API, over any [`Directory`] of nodes (the Redis [`LoadSet`] in the registry, an
//! in-process directory in standalone chat-node, a fake in tests).
//!
//! ```text
//! GET /v1/assign[?avoid=id,id] ──▶ Directory::assign ──▶ 200 {"node","url","connections","capacity"}   Cache-Control: no-store
//!                                      ├─▶ 503 {"error":"no_node_available",...}         Retry-After: 1
//!                                      ├─▶ 503 {"error":"unavailable",...}               Retry-After: 1
//!                                      └─▶ 400 {"error":"bad_request",...}               (a bad avoid list)
//! GET /v1/nodes  ──▶ Directory::nodes  ──▶ 200 {"nodes":[NodeEntry...]}  |  503 {"error":"unavailable",...}
//! ```
//!
//! **Reservations.** An assignment normally *reserves* a place on the node it names (the node's score
//! goes up by one until the node next reports its real count, within its heartbeat interval), so a burst
//! of clients spreads over the nodes. Anonymous callers could inflate that and make nodes look full, so
//! each caller address (an IPv4 address or an IPv6 /64) gets at most `--reservations-per-ip` reserving
//! assignments per second; beyond that it is still answered — with the least loaded node that has room,
//! read without reserving anything. A reservation lives only until the node's next report.
//!
//! **Avoid.** A client that could not open the node it was given asks again with `?avoid=<node id>` (up
//! to [`MAX_AVOIDED`] ids, comma-separated). Those nodes are picked only when no other node has room, so
//! the clients of a node that just died go straight to the others instead of back to it until its
//! heartbeat expires. It only steers that one answer: nobody can take a node out for anyone else.
//!
//! Cross-origin use is limited to `--allowed-origins`: a request whose `Origin` is configured gets
//! `Access-Control-Allow-Origin` naming that origin (and `Vary: Origin`); any other origin gets no CORS
//! headers, so browsers keep foreign pages from reading the answers. Same-origin pages need none.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use switchboard_runtime::report::chain;

use switchboard_loadset::{self as loadset, LoadSet, NodeEntry};

use crate::origins::AllowedOrigins;

/// Why a [`Directory`] could not answer. The API maps every variant to `503 unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The Redis load set failed.
    #[error(transparent)]
    LoadSet(#[from] loadset::Error),
    /// Any other backend failure (for directories other than [`LoadSet`]).
    #[error("directory backend failed")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
}

impl DirectoryError {
    /// Wraps any error as [`DirectoryError::Backend`].
    pub fn backend(error: impl StdError + Send + Sync + 'static) -> Self {
        DirectoryError::Backend(Box::new(error))
    }

    /// A short stable label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DirectoryError::LoadSet(e) => e.metric_label(),
            DirectoryError::Backend(_) => "backend",
        }
    }
}

/// Most node ids one `?avoid=` may name.
pub const MAX_AVOIDED: usize = 8;

/// Nodes a client could not reach: picked only when no other node has room (module docs, "Avoid").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Avoid(Vec<String>);

impl Avoid {
    /// No node avoided.
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads `?avoid=`: comma-separated node ids, at most [`MAX_AVOIDED`], each a valid node id.
    pub fn parse(list: &str) -> Result<Self, String> {
        let ids: Vec<String> = list
            .split(',')
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect();
        if ids.len() > MAX_AVOIDED {
            return Err(format!("avoid names at most {MAX_AVOIDED} nodes"));
        }
        if let Some(bad) = ids
            .iter()
            .find(|id| id.len() > loadset::MAX_NODE_ID_LEN || id.chars().any(char::is_control))
        {
            return Err(format!(
                "avoid: {:?} is not a node id",
                bad.chars().take(40).collect::<String>()
            ));
        }
        Ok(Self(ids))
    }

    /// The avoided node ids.
    pub fn ids(&self) -> &[String] {
        &self.0
    }

    /// Whether `id` is avoided.
    pub fn contains(&self, id: &str) -> bool {
        self.0.iter().any(|a| a == id)
    }

    /// The least loaded accepting entry of `nodes` (ties at random), outside this list when any has
    /// room.
    pub fn least_loaded(&self, nodes: Vec<NodeEntry>) -> Option<NodeEntry> {
        let mut open: Vec<NodeEntry> = nodes.into_iter().filter(|n| n.accepting).collect();
        fastrand::shuffle(&mut open);
        let pick = |skip: bool| {
            open.iter()
                .filter(|n| !(skip && self.contains(&n.id)))
                .min_by_key(|n| n.connections)
                .cloned()
        };
        pick(true).or_else(|| pick(false))
    }
}

/// Something that knows the live nodes and can pick one for a new client.
pub trait Directory: Send + Sync + 'static {
    /// Picks the node for a new client, outside `avoid` when another has room, and counts the
    /// assignment against it; `None` if no node has room.
    fn assign(
        &self,
        avoid: &Avoid,
    ) -> impl Future<Output = Result<Option<NodeEntry>, DirectoryError>> + Send;
    /// All nodes with their load, sorted by id.
    fn nodes(&self) -> impl Future<Output = Result<Vec<NodeEntry>, DirectoryError>> + Send;
    /// Picks the node for a new client without counting it: the least loaded node that accepts (ties
    /// at random), outside `avoid` when another has room; `None` if none does.
    fn peek(
        &self,
        avoid: &Avoid,
    ) -> impl Future<Output = Result<Option<NodeEntry>, DirectoryError>> + Send {
        async { Ok(avoid.least_loaded(self.nodes().await?)) }
    }
}

/// Reserving assignments per second and caller address by default: a page load or two per second
/// from one household or office, far below what it takes to make a node look full.
pub const DEFAULT_RESERVATIONS_PER_IP: u32 = 5;
/// Caller addresses tracked at most; the table is cleared when it grows past this.
const MAX_TRACKED_CALLERS: usize = 65_536;

/// How many reserving assignments each caller address gets per second.
#[derive(Debug)]
pub struct Reservations {
    per_second: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Reservations {
    /// At most `per_second` reserving assignments per caller address and second (0: never reserve).
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// True if `caller` may reserve now (and counts it). Unknown callers (no address) may not.
    pub fn allow(&self, caller: Option<IpAddr>) -> bool {
        let Some(ip) = caller else { return false };
        if self.per_second == 0 {
            return false;
        }
        let key = caller_key(ip);
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_TRACKED_CALLERS && !seen.contains_key(&key) {
            seen.clear();
        }
        let (since, count) = seen.entry(key).or_insert((now, 0));
        if now.duration_since(*since) >= Duration::from_secs(1) {
            *since = now;
            *count = 0;
        }
        *count += 1;
        *count <= self.per_second
    }
}

/// The unit per-address limits count by: an IPv4 address (also when mapped into IPv6), or an IPv6
/// /64 — one host's usual allocation, so a host cannot dodge a limit by changing its low bits.
pub fn caller_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6([s[0], s[1], s[2], s[3], 0, 0, 0, 0].into())
            }
        },
        v4 => v4,
    }
}

struct Api<D> {
    dir: Arc<D>,
    reservations: Reservations,
}

impl Directory for LoadSet {
    async fn assign(&self, avoid: &Avoid) -> Result<Option<NodeEntry>, DirectoryError> {
        Ok(LoadSet::assign_avoiding(self, avoid.ids()).await?)
    }

    async fn nodes(&self) -> Result<Vec<NodeEntry>, DirectoryError> {
        Ok(LoadSet::nodes(self).await?)
    }
}

impl<D: Directory> Directory for Arc<D> {
    fn assign(
        &self,
        avoid: &Avoid,
    ) -> impl Future<Output = Result<Option<NodeEntry>, DirectoryError>> + Send {
        (**self).assign(avoid)
    }

    fn nodes(&self) -> impl Future<Output = Result<Vec<NodeEntry>, DirectoryError>> + Send {
        (**self).nodes()
    }
}

/// Body of a successful `GET /v1/assign`.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Assignment {
    /// Node id.
    pub node: String,
    /// WebSocket URL to open.
    pub url: String,
    /// The node's load when it was chosen.
    pub connections: u64,
    /// The node's capacity.
    pub capacity: u64,
}

/// Body of `GET /v1/nodes`.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct NodeList {
    /// All nodes, sorted by id.
    pub nodes: Vec<NodeEntry>,
}

/// Body of every error answer.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct ApiError {
    /// Stable machine-readable code: `no_node_available` or `unavailable`.
    pub error: String,
    /// Human-readable explanation.
    pub message: String,
}

/// The API routes (`/v1/assign`, `/v1/nodes`) over `dir`, with [`DEFAULT_RESERVATIONS_PER_IP`].
pub fn router<D: Directory>(dir: Arc<D>, origins: Arc<AllowedOrigins>) -> Router {
    router_with(dir, origins, Reservations::new(DEFAULT_RESERVATIONS_PER_IP))
}

/// The API routes (`/v1/assign`, `/v1/nodes`) over `dir`, reserving as `reservations` allows.
pub fn router_with<D: Directory>(
    dir: Arc<D>,
    origins: Arc<AllowedOrigins>,
    reservations: Reservations,
) -> Router {
    Router::new()
        .route("/v1/assign", get(assign::<D>).options(preflight))
        .route("/v1/nodes", get(nodes::<D>).options(preflight))
        .layer(axum::middleware::from_fn(move |req, next| {
            cors(origins.clone(), req, next)
        }))
        .with_state(Arc::new(Api { dir, reservations }))
}

async fn assign<D: Directory>(
    State(api): State<Arc<Api<D>>>,
    request: axum::extract::Request,
) -> Response {
    let dir = &api.dir;
    let caller = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let avoid = match avoid_of(request.uri()) {
        Ok(avoid) => avoid,
        Err(why) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CACHE_CONTROL, "no-store")],
                Json(ApiError {
                    error: "bad_request".to_owned(),
                    message: why,
                }),
            )
                .into_response();
        }
    };
    let picked = if api.reservations.allow(caller) {
        dir.assign(&avoid).await
    } else {
        dir.peek(&avoid).await
    };
    match picked {
        Ok(Some(entry)) => {
            let body = Assignment {
                node: entry.id,
                url: entry.url,
                connections: entry.connections,
                capacity: entry.capacity,
            };
            ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
        }
        Ok(None) => unavailable(
            "no_node_available",
            "no chat node has room for another connection; retry shortly",
        ),
        Err(error) => {
            tracing::warn!(error = %chain(&error), "assign failed");
            unavailable(
                "unavailable",
                "the node directory is unavailable; retry shortly",
            )
        }
    }
}

async fn nodes<D: Directory>(State(api): State<Arc<Api<D>>>) -> Response {
    match api.dir.nodes().await {
        Ok(nodes) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(NodeList { nodes }),
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(error = %chain(&error), "listing nodes failed");
            unavailable(
                "unavailable",
                "the node directory is unavailable; retry shortly",
            )
        }
    }
}

async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn cors(
    origins: Arc<AllowedOrigins>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let policy = crate::origins::CorsPolicy {
        methods: "GET, OPTIONS",
        allow_headers: None,
        expose_headers: None,
    };
    crate::origins::answer_cors(&origins, policy, request, next).await
}

/// The query of `GET /v1/assign`.
#[derive(serde::Deserialize)]
struct AssignQuery {
    avoid: Option<String>,
}

/// The `avoid` parameter of an assign request (none without one).
fn avoid_of(uri: &axum::http::Uri) -> Result<Avoid, String> {
    let query = axum::extract::Query::<AssignQuery>::try_from_uri(uri)
        .map_err(|e| format!("bad query: {}", e.body_text()))?;
    match &query.avoid {
        Some(list) => Avoid::parse(list),
        None => Ok(Avoid::none()),
    }
}

fn unavailable(code: &str, message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::RETRY_AFTER, "1"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Json(ApiError {
            error: code.to_owned(),
            message: message.to_owned(),
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    /// An in-memory directory: least connections wins, ties by id.
    #[derive(Default)]
    struct FakeDirectory {
        nodes: Mutex<Vec<NodeEntry>>,
        broken: bool,
    }

    impl FakeDirectory {
        fn with(nodes: &[(&str, u64, u64)]) -> Self {
            let nodes = nodes
                .iter()
                .map(|&(id, connections, capacity)| NodeEntry {
                    id: id.into(),
                    url: format!("ws://{id}/ws"),
                    connections,
                    capacity,
                    accepting: connections < capacity,
                    live: true,
                    stats: Default::default(),
                })
                .collect();
            Self {
                nodes: Mutex::new(nodes),
                broken: false,
            }
        }

        fn broken() -> Self {
            Self {
                broken: true,
                ..Self::default()
            }
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("redis is down")]
    struct Down;

    impl Directory for FakeDirectory {
        async fn assign(&self, avoid: &Avoid) -> Result<Option<NodeEntry>, DirectoryError> {
            if self.broken {
                return Err(DirectoryError::backend(Down));
            }
            let mut nodes = self.nodes.lock().expect("lock");
            let open = nodes
                .iter()
                .map(|n| NodeEntry {
                    accepting: n.connections < n.capacity,
                    ..n.clone()
                })
                .collect();
            let Some(pick) = avoid.least_loaded(open) else {
                return Ok(None);
            };
            let chosen = nodes.iter_mut().find(|n| n.id == pick.id).expect("listed");
            let before = chosen.clone();
            chosen.connections += 1;
            Ok(Some(before))
        }

        async fn nodes(&self) -> Result<Vec<NodeEntry>, DirectoryError> {
            if self.broken {
                return Err(DirectoryError::backend(Down));
            }
            Ok(self.nodes.lock().expect("lock").clone())
        }
    }

    async fn get(
        dir: FakeDirectory,
        path: &str,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = router(Arc::new(dir), Arc::new(AllowedOrigins::default()))
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let json = serde_json::from_slice(&bytes).expect("json body");
        (status, headers, json)
    }

    #[tokio::test]
    async fn an_avoided_node_is_picked_only_when_no_other_has_room() {
        let nodes = [("dead", 0, 10), ("b", 4, 10), ("c", 6, 10)];
        let (status, _, body) = get(FakeDirectory::with(&nodes), "/v1/assign?avoid=dead").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["node"], "b", "the least loaded of the others: {body}");
        let (_, _, body) = get(FakeDirectory::with(&nodes), "/v1/assign?avoid=dead,b").await;
        assert_eq!(body["node"], "c", "{body}");
        let (status, _, body) = get(FakeDirectory::with(&nodes), "/v1/assign?avoid=dead,b,c").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["node"], "dead",
            "all avoided: the least loaded after all: {body}"
        );
        let full = [("dead", 0, 10), ("b", 10, 10)];
        let (_, _, body) = get(FakeDirectory::with(&full), "/v1/assign?avoid=dead").await;
        assert_eq!(body["node"], "dead", "the only node with room: {body}");
    }

    #[tokio::test]
    async fn a_bad_avoid_list_is_refused_with_the_reason() {
        let nodes = [("a", 0, 10)];
        let nine = (0..9)
            .map(|i| format!("n{i}"))
            .collect::<Vec<_>>()
            .join(",");
        for (query, says) in [
            (format!("avoid={nine}"), "at most 8"),
            ("avoid=a%01b".to_owned(), "not a node id"),
            (format!("avoid={}", "x".repeat(300)), "not a node id"),
            ("avoid=a&avoid=b".to_owned(), "bad query"),
        ] {
            let (status, _, body) =
                get(FakeDirectory::with(&nodes), &format!("/v1/assign?{query}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            assert_eq!(body["error"], "bad_request");
            let message = body["message"].as_str().unwrap_or_default();
            assert!(message.contains(says), "{query}: {message}");
        }
        let (status, _, body) = get(FakeDirectory::with(&nodes), "/v1/assign?avoid=").await;
        assert_eq!(
            (status, &body["node"]),
            (StatusCode::OK, &serde_json::json!("a"))
        );
    }

    #[tokio::test]
    async fn assign_answers_with_the_least_loaded_node() {
        let dir = FakeDirectory::with(&[("a", 5, 10), ("b", 2, 10)]);
        let (status, headers, body) = get(dir, "/v1/assign").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"node": "b", "url": "ws://b/ws", "connections": 2, "capacity": 10})
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }

    /// `GET /v1/assign` from `caller` on a router that reserves `per_second` per caller.
    async fn assign_from(app: &Router, caller: &str) -> serde_json::Value {
        let addr: SocketAddr = caller.parse().expect("address");
        let response = app
            .clone()
            .oneshot(
                Request::get("/v1/assign")
                    .extension(ConnectInfo(addr))
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("json body")
    }

    #[tokio::test]
    async fn one_caller_reserves_only_its_share_and_is_still_answered() {
        let dir = Arc::new(FakeDirectory::with(&[("a", 0, 1000)]));
        let app = router_with(
            dir.clone(),
            Arc::new(AllowedOrigins::default()),
            Reservations::new(3),
        );
        for _ in 0..20 {
            let body = assign_from(&app, "10.0.0.1:4000").await;
            assert_eq!(body["node"], "a", "every call is answered: {body}");
        }
        let reserved = || dir.nodes.lock().expect("lock")[0].connections;
        assert_eq!(reserved(), 3, "20 calls from one address reserved 3 places");
        assign_from(&app, "[2001:db8::1]:4000").await;
        assign_from(&app, "[2001:db8::2]:4000").await;
        assert_eq!(
            reserved(),
            5,
            "another address has its own share; a /64 is one caller"
        );
    }

    #[tokio::test]
    async fn without_a_caller_address_or_with_reservations_off_nothing_is_reserved() {
        let dir = Arc::new(FakeDirectory::with(&[("a", 0, 10)]));
        let off = router_with(
            dir.clone(),
            Arc::new(AllowedOrigins::default()),
            Reservations::new(0),
        );
        assign_from(&off, "10.0.0.1:1").await;
        let response = router(dir.clone(), Arc::new(AllowedOrigins::default()))
            .oneshot(
                Request::get("/v1/assign")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(dir.nodes.lock().expect("lock")[0].connections, 0);
    }

    #[tokio::test]
    async fn assign_without_room_is_503_with_retry_after() {
        let dir = FakeDirectory::with(&[("a", 10, 10)]);
        let (status, headers, body) = get(dir, "/v1/assign").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(body["error"], "no_node_available");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    #[tokio::test]
    async fn backend_failure_is_503_unavailable() {
        let (status, headers, body) = get(FakeDirectory::broken(), "/v1/assign").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(body["error"], "unavailable");
        let (status, _, body) = get(FakeDirectory::broken(), "/v1/nodes").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "unavailable");
    }

    #[tokio::test]
    async fn nodes_lists_every_entry() {
        let dir = FakeDirectory::with(&[("a", 10, 10), ("b", 1, 10)]);
        let (status, headers, body) = get(dir, "/v1/nodes").await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        let list: NodeList = serde_json::from_value(body).expect("node list");
        let summary: Vec<(&str, bool)> = list
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.accepting))
            .collect();
        assert_eq!(summary, vec![("a", false), ("b", true)]);
    }

    async fn preflight_from(origin: &str) -> Response {
        let allowed = AllowedOrigins::new(&["https://app.example".into()]).expect("origins");
        router(Arc::new(FakeDirectory::default()), Arc::new(allowed))
            .oneshot(
                Request::options("/v1/assign")
                    .header(header::ORIGIN, origin)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response")
    }

    #[tokio::test]
    async fn cors_names_only_configured_origins() {
        let response = preflight_from("https://app.example").await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(
            response.headers()[header::ACCESS_CONTROL_ALLOW_METHODS],
            "GET, OPTIONS"
        );
        let foreign = preflight_from("https://evil.example").await;
        assert!(
            foreign
                .headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none()
        );
        assert_eq!(foreign.headers()[header::VARY], "origin");
    }

    #[test]
    fn logged_errors_name_their_cause() {
        let error = DirectoryError::backend(Down);
        assert_eq!(chain(&error), "directory backend failed: redis is down");
    }
}
