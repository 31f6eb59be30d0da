//! Switchboard registry: the placement service and the shared runtime pieces of every Switchboard binary.
//!
//! A client asks the registry `GET /v1/assign` which chat-node to open a WebSocket to; the registry answers
//! with the least-loaded live node from the *load set* in Redis. This crate owns that load-set schema, so
//! chat-node (which reports its connection count) and the operator (which owns membership on Kubernetes)
//! use it through this library rather than writing Redis keys of their own.
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
//! - [`redis`]: the Redis connection (plain URL or Sentinel), shared by every binary;
//! - [`keys`]: key names and the per-cluster prefix;
//! - [`loadset`]: the load set, node table and heartbeats, and the assignment script;
//! - [`api`]: the HTTP placement API over any [`api::Directory`];
//! - [`metrics`]: Prometheus registry holder and `/metrics` route;
//! - [`runtime`]: logging, the shutdown signal and the HTTP serve loop;
//! - [`server`]: the `registry` binary's wiring ([`run`]);
//! - [`web`]: the web page served at `/`;
//! - `testing` (feature `testing`): real `redis-server` / `redis-sentinel` processes for tests.

#![warn(missing_docs)]

pub mod api;
pub mod keys;
pub mod loadset;
pub mod metrics;
pub mod redis;
pub mod runtime;
pub mod server;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod web;

pub use server::{Args, run};
