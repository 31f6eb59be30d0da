//! Process plumbing shared by every Switchboard binary: logging flags and set-up, the shutdown signal, and
//! the HTTP serve loop.
//!
//! ```text
//! SIGTERM/SIGINT #1 ──▶ CancellationToken cancelled ──▶ readiness turns 503, servers drain, tasks stop
//! SIGTERM/SIGINT #2 ──▶ exit(130) immediately
//! ```

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Exit code after a second shutdown signal (the conventional 128 + SIGINT).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Logging flags.
#[derive(clap::Args, Clone, Debug)]
pub struct LogArgs {
    /// Log format.
    #[arg(
        long = "log-format",
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,

    /// Log filter in `tracing` EnvFilter syntax, e.g. `info` or `info,registry=debug`.
    #[arg(long = "log", env = "RUST_LOG", default_value = "info")]
    pub log: String,
}

impl Default for LogArgs {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log: "info".to_owned(),
        }
    }
}

/// Installs the global `tracing` subscriber described by `args`. An invalid filter falls back to `info`
/// (with a warning); a second call (e.g. several servers in one test process) leaves the first in place.
pub fn init_tracing(args: &LogArgs) {
    let (filter, bad_filter) = match EnvFilter::try_new(&args.log) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error)),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let (Ok(()), Some(error)) = (installed, bad_filter) {
        tracing::warn!(%error, filter = %args.log, "invalid log filter, using \"info\"");
    }
}

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

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting and waits for
/// in-flight requests (and open upgraded connections) to finish. Handlers can read the peer address
/// with `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
    .await
}

#[cfg(test)]
mod tests {
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn serve_answers_until_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        );
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, router, shutdown.clone()));

        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("127.0.0.1"), "{response}");

        shutdown.cancel();
        server.await.expect("join").expect("serve");
    }

    #[test]
    fn log_flags_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            log: LogArgs,
        }
        let cli = Cli::parse_from(["x", "--log-format", "json", "--log", "debug"]);
        assert_eq!(cli.log.log_format, LogFormat::Json);
        assert_eq!(cli.log.log, "debug");
    }
}
