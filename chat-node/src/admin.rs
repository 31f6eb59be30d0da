//! The room ACL admin API: who may join a private room besides the rooms a token grants.
//!
//! ```text
//!  GET    /v1/rooms/{room}/acl          ─▶ 200 {"room","users":[...]}
//!  PUT    /v1/rooms/{room}/acl/{user}   ─▶ 200 {"room","user","listed":true,"changed"}   (409 when full)
//!  DELETE /v1/rooms/{room}/acl/{user}   ─▶ 200 {"room","user","listed":false,"changed"}
//!           └─ changed ─▶ bus event access_revoked ─▶ every node: that user's sessions leave the room
//!                         (`left`) unless their token grants it
//!  each call: Authorization: Bearer <JWT with "admin": true>, verified like a hello token
//! ```
//!
//! Only token mode has admins: in open mode anyone could claim to be one, so every call is `403`.
//! Only `private:` rooms have an ACL (public rooms are open to every user). Refused calls are counted
//! in `switchboard_refusals_total{reason="admin_denied"}` and logged with the peer like other refusals;
//! every change is logged at info with the admin's name.

use crate::backend::AclChange;
use crate::hub::{Topic, access_revoked};
use crate::names::{is_private_room, valid_room, valid_user};
use crate::node::Node;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use switchboard_runtime::report::chain;

/// Label of refused admin calls in `switchboard_refusals_total`.
const REFUSAL: &str = "admin_denied";

/// The admin routes (merged into [`crate::server::router`]).
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/v1/rooms/{room}/acl", get(list))
        .route(
            "/v1/rooms/{room}/acl/{user}",
            axum::routing::put(grant).delete(revoke),
        )
        .with_state(node)
}

type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// An answer other than success: status, error code and message.
struct Denied(StatusCode, &'static str, String);

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let Denied(status, code, message) = self;
        let mut response =
            (status, Json(json!({ "error": code, "message": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The admin's user name, or why the call is refused.
async fn admin(node: &Node, headers: &HeaderMap, peer: &Peer) -> Result<String, Denied> {
    let refuse = |status, code, message: String, user: Option<&str>| {
        let peer = peer.as_ref().map(|Extension(ConnectInfo(p))| *p);
        node.metrics.refusals.record(REFUSAL, peer, user, &message);
        Denied(status, code, message)
    };
    let auth = &node.settings.auth;
    if auth.is_open() {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "admin_unavailable",
            "this node runs open identity, where anyone could claim to be an admin: room ACLs are managed only in token mode".to_owned(),
            None,
        ));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if token.is_empty() {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "auth_failed",
            "send Authorization: Bearer <token> with a token whose claims carry \"admin\": true"
                .to_owned(),
            None,
        ));
    }
    let verified = auth.verify(token).await.map_err(|r| {
        refuse(
            StatusCode::UNAUTHORIZED,
            "auth_failed",
            r.reason().to_owned(),
            None,
        )
    })?;
    if !verified.admin {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the token of '{}' does not carry \"admin\": true",
                verified.user
            ),
            Some(&verified.user),
        ));
    }
    Ok(verified.user)
}

/// Refuses names that are not a private room / a user.
fn check_names(room: &str, user: Option<&str>) -> Result<(), Denied> {
    if !valid_room(room) || !is_private_room(room) {
        return Err(Denied(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            "only private rooms (named private:…, at most 64 characters) have an ACL".to_owned(),
        ));
    }
    if let Some(user) = user.filter(|u| !valid_user(u)) {
        let shown: String = user.chars().take(40).collect();
        return Err(Denied(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!("'{shown}' is not a valid user name"),
        ));
    }
    Ok(())
}

fn unavailable(e: &crate::backend::Error) -> Denied {
    tracing::warn!(error = %chain(e), "room ACL store operation failed");
    Denied(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the chat store is unavailable right now; nothing was changed, retry".to_owned(),
    )
}

async fn list(
    State(node): State<Arc<Node>>,
    Path(room): Path<String>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, Denied> {
    admin(&node, &headers, &peer).await?;
    check_names(&room, None)?;
    let users = node
        .backend
        .acl_list(&room)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(Json(json!({ "room": room, "users": users })))
}

async fn grant(
    State(node): State<Arc<Node>>,
    Path((room, user)): Path<(String, String)>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, Denied> {
    change(&node, &headers, &peer, room, user, true).await
}

async fn revoke(
    State(node): State<Arc<Node>>,
    Path((room, user)): Path<(String, String)>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, Denied> {
    change(&node, &headers, &peer, room, user, false).await
}

async fn change(
    node: &Node,
    headers: &HeaderMap,
    peer: &Peer,
    room: String,
    user: String,
    allow: bool,
) -> Result<Json<serde_json::Value>, Denied> {
    let admin = admin(node, headers, peer).await?;
    check_names(&room, Some(&user))?;
    let outcome = node
        .backend
        .acl_update(&room, &user, allow)
        .await
        .map_err(|e| unavailable(&e))?;
    if outcome == AclChange::Full {
        return Err(Denied(
            StatusCode::CONFLICT,
            "acl_full",
            format!(
                "the ACL of '{room}' already lists {} users (or this node keeps its most rooms with an ACL): revoke someone first",
                crate::config::ROOM_ACL_CAP
            ),
        ));
    }
    let changed = outcome == AclChange::Changed;
    if changed {
        tracing::info!(%admin, %room, %user, granted = allow, "room ACL changed");
        if !allow {
            // Sessions that got in through the ACL leave at once, on every node.
            node.backend
                .publish(Topic::room(&room), access_revoked(&room, &user))
                .await
                .map_err(|e| unavailable(&e))?;
        }
    }
    Ok(Json(
        json!({ "room": room, "user": user, "listed": allow, "changed": changed }),
    ))
}
