//! The one shutdown signal of a process.
//!
//! ```text
//! SIGTERM/SIGINT #1 ──▶ CancellationToken cancelled ──▶ readiness turns 503, servers drain, tasks stop
//! SIGTERM/SIGINT #2 ──▶ exit(130) immediately
//! ```

use tokio_util::sync::CancellationToken;

/// Exit code after a second shutdown signal (the conventional 128 + SIGINT).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Returns a token that the first SIGTERM or SIGINT cancels (drain); a second one exits the process at
/// once with [`FORCED_EXIT_CODE`]. Must be called inside a Tokio runtime.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; only Ctrl-C will shut down");
                None
            }
        };
        let mut received = 0;
        loop {
            let name = tokio::select! {
                result = tokio::signal::ctrl_c() => {
                    if let Err(error) = result {
                        tracing::error!(%error, "cannot listen for SIGINT");
                        std::future::pending::<()>().await;
                    }
                    "SIGINT"
                }
                Some(()) = async {
                    match terminate.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => "SIGTERM",
            };
            received += 1;
            if received == 1 {
                tracing::info!(
                    signal = name,
                    "shutting down: draining (send again to exit at once)"
                );
                cancel.cancel();
            } else {
                tracing::warn!(signal = name, "second signal: exiting now");
                std::process::exit(FORCED_EXIT_CODE);
            }
        }
    });
    token
}
