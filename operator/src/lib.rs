//! Switchboard Kubernetes operator: the `ChatCluster` resource, the objects it owns, and the load-set sync
//! that makes pod readiness decide which chat-nodes the registry hands out.
//!
//! ```text
//!            ┌──────────── reconcile (Controller<ChatCluster>) ────────────┐
//! ChatCluster┤ resources::render (pure) ─▶ server-side apply ─▶ status/events │
//!            │ scale-down pending ─▶ pod-deletion-cost first                   │
//!            └──────────────────────────────────────────────────────────────┘
//!            ┌──────────── loadset_sync (Controller<ChatCluster>) ──────────┐
//! EndpointSlices (ready, non-terminating chat-node pods) ─▶ registry load set │
//!            │ every resync: repair drift, connections per pod, master      │
//!            └──────────────────────────────────────────────────────────────┘
//! ```
//!
//! Modules: [`crd`] (types and schema), [`fixtures`] (test builders), [`resources`] (pure rendering),
//! [`reconcile`] (the ChatCluster controller), [`monitoring`] (PodMonitors where the Prometheus Operator
//! is installed), [`loadset_sync`] (membership), [`leader`] (Lease election), [`metrics`], [`server`] (the
//! `operator` binary's wiring).
//!
//! The two controllers never import each other; what they share lives in its own modules:
//!
//! ```text
//! reconcile ──┐                  ┌─▶ context     (client, recorder, metrics, settings, field manager, pause)
//!             ├─ depend only on ─┼─▶ observation (what the load-set sync saw; wakes the reconciler)
//! loadset_sync┘                  ├─▶ secret      (the one reader of the Redis password Secret)
//!                                └─▶ resources, crd, metrics
//! ```

pub mod context;
pub mod crd;
pub mod expose;
pub mod fixtures;
pub mod leader;
pub mod loadset_sync;
pub mod metrics;
pub mod monitoring;
pub mod observation;
pub mod reconcile;
pub mod resources;
pub mod secret;
pub mod server;
