//! TLS at the edge: serving `https` and `wss` from a certificate and key file, for deployments
//! without an ingress, and picking up a renewed pair without a restart.
//!
//! ```text
//!  --tls-cert-file, --tls-key-file ──load──▶ CertifiedKey ──▶ Certificates (swapped in place)
//!                                                                 ▲           │ resolves every handshake
//!  watch: every RELOAD_POLL, (size, mtime, inode) of both files   │           ▼
//!         changed and then steady for one poll? ──load──ok──▶ swap, log   ServerConfig (ring, HTTP/1.1)
//!                                                └─err─▶ keep the old pair, log why
//!
//!  any axum Listener ──▶ TlsListener: handshakes in tasks (at most MAX_HANDSHAKES at once, each
//!                        within HANDSHAKE_TIMEOUT) ──▶ finished TLS streams ──▶ axum::serve
//! ```
//!
//! A handshake that fails or times out closes its socket and is logged at debug only: it is the
//! client's business (an untrusted certificate, a port scan), and the listener keeps accepting.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How often the certificate and key files are looked at. A `stat` of two files is cheap, and a
/// renewed certificate is in use within two polls (a change is loaded once it has held for one).
pub const RELOAD_POLL: Duration = Duration::from_secs(1);
/// Longest a client may take for its TLS handshake before its socket is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further sockets wait in the kernel's accept queue.
pub const MAX_HANDSHAKES: usize = 1024;
/// Largest certificate or key file read: a chain of a few certificates is a few KiB.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The TLS flag group: both files, or neither (plain HTTP).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// PEM file with the certificate chain (leaf first) to serve HTTPS and WSS with; reloaded when it
    /// changes. Needs --tls-key-file.
    #[arg(
        long = "tls-cert-file",
        env = "SWITCHBOARD_TLS_CERT_FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1); reloaded when it changes.
    /// Needs --tls-cert-file.
    #[arg(
        long = "tls-key-file",
        env = "SWITCHBOARD_TLS_KEY_FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
}

impl TlsArgs {
    /// The certificate and key files, when TLS was asked for.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((
            self.tls_cert_file.as_deref()?,
            self.tls_key_file.as_deref()?,
        ))
    }

    /// `wss` with TLS, else `ws`: the scheme of this server's WebSocket URLs.
    pub fn websocket_scheme(&self) -> &'static str {
        if self.files().is_some() { "wss" } else { "ws" }
    }

    /// `https` with TLS, else `http`.
    pub fn http_scheme(&self) -> &'static str {
        if self.files().is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// Loading a certificate and key pair failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {what} file {}", path.display())]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file is larger than any certificate chain or key.
    #[error("{} is larger than {MAX_PEM_BYTES} bytes: not a PEM certificate or key", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no PEM private key.
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A PEM section could not be decoded.
    #[error("{} is not valid PEM: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// The key is of a kind the TLS stack cannot sign with, or does not belong to the certificate.
    #[error("the key in {} does not fit the certificate in {}", key.display(), cert.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What the TLS stack said.
        #[source]
        source: rustls::Error,
    },
    /// The TLS stack refused its own settings (cannot happen with the built-in provider).
    #[error("TLS settings")]
    Config(#[source] rustls::Error),
}

/// `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The certificate in use, swapped in place when the files change; every handshake reads it.
struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl Certificates {
    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

/// What identifies one version of a file: size, modification time and inode (a file renamed over
/// the old one has a new inode even when size and time match).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp(Option<(u64, Option<SystemTime>, u64)>);

impl Stamp {
    fn of(path: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        Stamp(
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.len(), m.modified().ok(), m.ino())),
        )
    }
}

/// A server's TLS: the certificate files, the pair in use and the acceptor that serves it.
pub struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
    certificates: Arc<Certificates>,
    acceptor: TlsAcceptor,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// The files' versions last seen by the watcher, and a change waiting to hold for one poll.
#[derive(Debug)]
pub struct Watch {
    loaded: (Stamp, Stamp),
    changed: Option<(Stamp, Stamp)>,
}

/// What one look at the files found.
#[derive(Debug)]
pub enum Polled {
    /// Nothing new to load (unchanged, or a change that has not held for one poll yet).
    Unchanged,
    /// A new pair is in use for new connections.
    Reloaded,
    /// The new files do not make a pair; the previous one stays in use.
    Kept(Error),
}

impl Tls {
    /// Loads the pair named by `args`; `None` when TLS was not asked for.
    pub fn from_args(args: &TlsArgs) -> Result<Option<Arc<Self>>> {
        args.files()
            .map(|(cert, key)| Self::load(cert, key).map(Arc::new))
            .transpose()
    }

    /// Loads `cert_file` and `key_file`; fails with the reason when they do not make a pair.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self> {
        let certificates = Arc::new(Certificates {
            current: RwLock::new(Arc::new(load_pair(cert_file, key_file)?)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(Error::Config)?
        .with_no_client_auth()
        .with_cert_resolver(certificates.clone());
        // The servers speak HTTP/1.1 only (the WebSocket upgrade is an HTTP/1.1 request).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            certificates,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The acceptor for new connections; it always serves the pair in use at the handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// The DER bytes of the leaf certificate in use.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.certificates.get().cert.first().cloned()
    }

    /// The watcher's starting point: the files as they are now count as loaded.
    pub fn watch(&self) -> Watch {
        let now = self.stamps();
        Watch {
            loaded: now,
            changed: None,
        }
    }

    fn stamps(&self) -> (Stamp, Stamp) {
        (Stamp::of(&self.cert_file), Stamp::of(&self.key_file))
    }

    /// One look at the files. A change is loaded once the files stayed the same for one poll, so a
    /// pair written one file after the other is read together; a failed load is not retried until
    /// the files change again.
    pub fn poll(&self, watch: &mut Watch) -> Polled {
        let now = self.stamps();
        if now == watch.loaded {
            watch.changed = None;
            return Polled::Unchanged;
        }
        if watch.changed != Some(now) {
            watch.changed = Some(now);
            return Polled::Unchanged;
        }
        watch.loaded = now;
        watch.changed = None;
        match load_pair(&self.cert_file, &self.key_file) {
            Ok(pair) => {
                self.certificates.set(Arc::new(pair));
                Polled::Reloaded
            }
            Err(e) => Polled::Kept(e),
        }
    }

    /// Looks at the files every [`RELOAD_POLL`] until `stop`, loading a new pair when they change and
    /// logging what happened.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        let span = tracing::info_span!("tls_reload", cert = %self.cert_file.display());
        let task = async move {
            let mut watch = tls.watch();
            let mut tick = tokio::time::interval(RELOAD_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match tls.poll(&mut watch) {
                    Polled::Unchanged => {}
                    Polled::Reloaded => tracing::info!(
                        key = %tls.key_file.display(),
                        "TLS certificate reloaded; new connections get the new one"
                    ),
                    Polled::Kept(e) => tracing::warn!(
                        error = %crate::report::chain(&e),
                        "TLS files changed but do not make a valid pair; still serving the previous certificate"
                    ),
                }
            }
        };
        tokio::spawn(tracing::Instrument::instrument(task, span))
    }
}

/// The PEM text of `path` (a `what` file: certificate, key, CA), at most 1 MiB.
pub fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let read = |source| Error::Read {
        what,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(Error::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> Error {
    Error::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Every certificate in `pem` (read from `path`, named in errors); at least one.
pub fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if chain.is_empty() {
        return Err(Error::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// The private key in `pem` (read from `path`, named in errors).
pub fn private_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(Error::NoKey {
            path: path.to_owned(),
        }),
        Err(e) => Err(pem_error(path, e)),
    }
}

fn load_pair(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey> {
    let chain = certificates(&read_pem("certificate", cert_file)?, cert_file)?;
    let key = private_key(&read_pem("key", key_file)?, key_file)?;
    CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider()).map_err(
        |source| Error::Pair {
            cert: cert_file.to_owned(),
            key: key_file.to_owned(),
            source,
        },
    )
}

/// A listener that hands axum finished TLS streams: each accepted socket's handshake runs in its own
/// task, so one slow client does not hold up the others.
pub struct TlsListener<L: axum::serve::Listener> {
    inner: L,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<Accepted<L>>>,
}

/// A socket whose handshake finished, with its peer address.
type Accepted<L> = (
    TlsStream<<L as axum::serve::Listener>::Io>,
    <L as axum::serve::Listener>::Addr,
);

impl<L: axum::serve::Listener> TlsListener<L> {
    /// TLS over `inner` with `tls`'s certificate (reloaded or not).
    pub fn new(inner: L, tls: &Tls) -> Self {
        Self {
            inner,
            acceptor: tls.acceptor(),
            handshakes: JoinSet::new(),
        }
    }
}

impl<L> axum::serve::Listener for TlsListener<L>
where
    L: axum::serve::Listener,
    L::Addr: fmt::Debug + Send + 'static,
{
    type Io = TlsStream<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                (io, addr) = self.inner.accept(), if self.handshakes.len() < MAX_HANDSHAKES => {
                    let acceptor = self.acceptor.clone();
                    self.handshakes.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                            Ok(Ok(stream)) => Some((stream, addr)),
                            Ok(Err(error)) => {
                                tracing::debug!(peer = ?addr, %error, "TLS handshake failed");
                                None
                            }
                            Err(_) => {
                                tracing::debug!(peer = ?addr, "TLS handshake timed out");
                                None
                            }
                        }
                    });
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(accepted)) = done {
                        return accepted;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests;
