//! Binding a listen address and serving an axum router on it until shutdown.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener, ListenerExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Binding a listen address failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
pub struct BindError {
    /// The address given with `--listen`.
    pub addr: SocketAddr,
    /// Why the operating system refused it.
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` (a `--listen` value). Every binary takes its listen address as a [`SocketAddr`]
/// (`HOST:PORT` with a numeric host), so a bad value is refused by the flag parser, not here.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting and waits for
/// in-flight requests (and open upgraded connections) to finish. Handlers can read the peer address
/// with `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_on(listener, router, shutdown).await
}

/// Like [`serve`], with TLS: every socket on `listener` first completes a handshake with `tls`'s
/// certificate in use at that moment ([`crate::tls::TlsListener`]).
pub async fn serve_tls(
    listener: TcpListener,
    tls: &crate::tls::Tls,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // axum hands `ConnectInfo<SocketAddr>` to handlers of a `TapIo` listener whatever it wraps.
    let listener = ListenerExt::tap_io(crate::tls::TlsListener::new(listener, tls), |_| {});
    serve_on(listener, router, shutdown).await
}

/// [`serve`] on any listener whose peers are socket addresses (a guarded or TLS listener).
pub async fn serve_on<L>(
    listener: L,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
    for<'a> SocketAddr: Connected<IncomingStream<'a, L>>,
{
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
}
