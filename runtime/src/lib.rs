//! Process plumbing shared by every Switchboard binary, so that each of them starts, logs, serves,
//! reports errors and stops the same way.
//!
//! ```text
//! main ─▶ telemetry::init_tracing(--log, --log-format)
//!      ─▶ shutdown::shutdown_on_signal() ──token──▶ every server and long-lived task
//!      ─▶ serve::bind(--listen) ─▶ serve::serve(router + metrics::route) until the token is cancelled
//!                                   (serve::serve_tls with tls::Tls when --tls-cert-file is given)
//!      ─▶ on error: report::chain(error) printed once, exit 1
//! ```
//!
//! - [`telemetry`]: the logging flag group and the `tracing` subscriber;
//! - [`shutdown`]: the one shutdown signal (first SIGTERM/Ctrl-C drains, a second exits);
//! - [`serve`]: binding `--listen` and serving an axum router with graceful shutdown;
//! - [`tls`]: `--tls-cert-file`/`--tls-key-file`, HTTPS/WSS with the pair reloaded when it changes;
//! - [`metrics`]: the one `/metrics` route and content type;
//! - [`duration`]: how durations are written in flags (`250ms`, `3s`, `2m`, `1h`), with ranges;
//! - [`secret`]: passwords and keys read from files, never from a flag value;
//! - [`report`]: the error convention (Display without the cause; the chain printed once).

#![warn(missing_docs)]

pub mod duration;
pub mod metrics;
pub mod report;
pub mod secret;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use serve::{bind, serve, serve_on, serve_tls};
pub use shutdown::{FORCED_EXIT_CODE, shutdown_on_signal};
pub use telemetry::{LogArgs, LogFormat, init_tracing};
