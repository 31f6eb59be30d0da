//! Switchboard registry: the placement service.
//!
//! A client asks the registry `GET /v1/assign` which chat-node to open a WebSocket to; the registry answers
//! with the least-loaded live node from the *load set* in Redis (schema and writes in
//! `switchboard-loadset`; chat-node reports its load there and the operator owns membership on Kubernetes).
//!
//! ```text
//!  chat-node ──heartbeat / update_score──▶ ┌──────────── Redis ────────────┐
//!  operator ───add/remove/sync_members───▶ │ load set · node table · beats │
//!  registry ◀──────────assign / nodes───── └───────────────────────────────┘
//!     │
//!     └── GET /v1/assign, /v1/nodes (api) · /healthz /readyz /metrics (server) · / (web)
//! ```
//!
//! Modules:
//! - [`api`]: the HTTP placement API over any [`api::Directory`] (a standalone chat-node serves it too);
//! - [`dev_token`]: the development identity provider (`POST /v1/dev-token`) and `GET /v1/auth`;
//! - [`metrics`]: the registry's own metrics;
//! - [`origins`]: the `--allowed-origins` allow-list (CORS here, the WebSocket `Origin` check in chat-node);
//! - [`server`]: the `registry` binary's wiring ([`run`]);
//! - [`web`]: the web page and dashboard served at `/`.
//!
//! Logging, shutdown, serving (plain HTTP, or HTTPS with `--tls-cert-file`) and `/metrics` come from
//! `switchboard-runtime`; the Redis connection from
//! `switchboard-redis`.

#![warn(missing_docs)]

pub mod api;
pub mod dev_token;
pub mod metrics;
pub mod origins;
pub mod server;
pub mod web;

pub use server::{Args, run};
