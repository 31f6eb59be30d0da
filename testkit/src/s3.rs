//! A real S3-compatible server for tests: MinIO, built from its Go module by `./scripts/test` (pinned
//! in `testkit/minio.version`) and started on a free loopback port with a fresh data directory and
//! random credentials (given in its environment, never on its command line).
//!
//! ```text
//! S3Server::start()  ─▶ minio server <tmp>/data --address 127.0.0.1:N --console-address 127.0.0.1:M
//!                       MINIO_ROOT_USER / MINIO_ROOT_PASSWORD random
//!                    ─▶ wait for /minio/health/live ─▶ PUT /switchboard (SigV4-signed CreateBucket)
//! ```

use super::{POLL_INTERVAL, Process, START_TIMEOUT, free_port, temp_dir, wait_until};
use ring::{digest, hmac};
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The pinned MinIO version (a Go module pseudo-version).
pub const MINIO_VERSION: &str = include_str!("../minio.version");

/// The bucket every server starts with.
pub const BUCKET: &str = "switchboard";

/// Where `./scripts/test` puts the MinIO binary.
pub fn minio_binary() -> io::Result<PathBuf> {
    let version = MINIO_VERSION.trim();
    let cache = std::env::var_os("SWITCHBOARD_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/switchboard")))
        .unwrap_or_else(|| PathBuf::from("/tmp/switchboard-cache"));
    let path = cache
        .join("tools")
        .join(format!("minio-{version}"))
        .join("minio");
    if path.is_file() {
        return Ok(path);
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "MinIO (the tests' S3 server) is not built at {}: run ./scripts/test, which builds it, or \
             GOBIN={} go install github.com/minio/minio@{version}",
            path.display(),
            path.parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
    ))
}

/// A MinIO process on a loopback port; killed (and its data removed) on drop.
pub struct S3Server {
    process: Process,
    port: u16,
    access_key: String,
    secret_key: String,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl S3Server {
    /// Starts MinIO with the bucket [`BUCKET`] and waits until it serves.
    pub async fn start() -> io::Result<Self> {
        let binary = minio_binary()?;
        let mut last = None;
        for _ in 0..3 {
            let (port, console) = (free_port()?, free_port()?);
            let dir = temp_dir("minio")?;
            let log = dir.join("minio.log");
            let out = std::fs::File::create(&log)?;
            let access_key = format!("sbtest{:012x}", fastrand::u64(..) >> 16);
            let secret_key = format!("{:032x}", fastrand::u128(..));
            let child = Command::new(&binary)
                .args([
                    "server",
                    &dir.join("data").display().to_string(),
                    "--address",
                    &format!("127.0.0.1:{port}"),
                    "--console-address",
                    &format!("127.0.0.1:{console}"),
                    "--quiet",
                ])
                .env("MINIO_ROOT_USER", &access_key)
                .env("MINIO_ROOT_PASSWORD", &secret_key)
                .env("MINIO_BROWSER", "off")
                .env("MINIO_UPDATE", "off")
                .env("HOME", &dir)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()?;
            let mut server = Self {
                process: Process {
                    child: Some(child),
                    dir,
                    log,
                },
                port,
                access_key,
                secret_key,
            };
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("minio did not start")))
    }

    async fn wait_ready(&mut self) -> io::Result<()> {
        let port = self.port;
        let ready = wait_until(START_TIMEOUT, || async move {
            Ok(http(port, "GET", "/minio/health/live", &[]).await? == 200)
        })
        .await;
        if let Err(e) = ready {
            if let Some(status) = self.process.exited() {
                return Err(self.process.failure("minio exited", &status));
            }
            return Err(self.process.failure("minio is not serving", &e));
        }
        let mut status = 0;
        for _ in 0..50 {
            status = self.create_bucket(BUCKET).await?;
            if status == 200 {
                return Ok(());
            }
            tokio::time::sleep(POLL_INTERVAL * 5).await;
        }
        Err(self
            .process
            .failure("creating the test bucket", &format!("HTTP {status}")))
    }

    /// Creates a bucket; returns the HTTP status (200 when made, 409 when it exists).
    pub async fn create_bucket(&self, bucket: &str) -> io::Result<u16> {
        let path = format!("/{bucket}");
        let headers = sigv4(&self.access_key, &self.secret_key, "PUT", &path, self.port);
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http(self.port, "PUT", &path, &refs).await
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The access key id.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret access key.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Freezes the server (SIGSTOP): connections hang as with a store that stopped answering.
    pub fn pause(&self) -> io::Result<()> {
        self.process.signal("-STOP")
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) -> io::Result<()> {
        self.process.signal("-CONT")
    }

    /// The server's data directory (objects appear under `<data>/<bucket>/`).
    pub fn data_dir(&self) -> PathBuf {
        self.process.dir.join("data")
    }
}

/// One HTTP/1.1 request without a body; returns the status.
async fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> io::Result<u16> {
    let mut tcp = tokio::time::timeout(START_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .map_err(|_| io::Error::other("connect timed out"))??;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut head = vec![0u8; 64];
    let n = tokio::time::timeout(START_TIMEOUT, tcp.read(&mut head))
        .await
        .map_err(|_| io::Error::other("no answer"))??;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {line:?}")))
}

/// The headers of an AWS Signature Version 4 signed request without a body (region us-east-1).
fn sigv4(
    access_key: &str,
    secret_key: &str,
    method: &str,
    path: &str,
    port: u16,
) -> Vec<(&'static str, String)> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (date, time) = utc(secs);
    let amz_date = format!("{date}T{time}Z");
    let empty = hex(digest::digest(&digest::SHA256, b"").as_ref());
    let host = format!("127.0.0.1:{port}");
    let canonical = format!(
        "{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{empty}\nx-amz-date:{amz_date}\n\nhost;x-amz-content-sha256;x-amz-date\n{empty}"
    );
    let scope = format!("{date}/us-east-1/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let mac = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
            .as_ref()
            .to_vec()
    };
    let k = mac(format!("AWS4{secret_key}").as_bytes(), &date);
    let k = mac(&k, "us-east-1");
    let k = mac(&k, "s3");
    let k = mac(&k, "aws4_request");
    let signature = hex(&mac(&k, &to_sign));
    vec![
        ("x-amz-date", amz_date),
        ("x-amz-content-sha256", empty),
        (
            "Authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}"
            ),
        ),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// (`YYYYMMDD`, `HHMMSS`) of a Unix time, UTC (days to civil date after Howard Hinnant's algorithm).
fn utc(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(utc(0), ("19700101".into(), "000000".into()));
        assert_eq!(utc(1_767_225_600), ("20260101".into(), "000000".into()));
        assert_eq!(
            utc(951_782_400 + 3661),
            ("20000229".into(), "010101".into())
        );
    }

    #[tokio::test]
    async fn minio_starts_with_its_bucket_and_refuses_bad_signatures() {
        let s3 = S3Server::start().await.expect("start minio");
        // the bucket exists: creating it again is a conflict
        assert_eq!(s3.create_bucket(BUCKET).await.expect("PUT"), 409);
        let forged = sigv4(s3.access_key(), "wrong secret", "PUT", "/other", s3.port());
        let refs: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            http(s3.port(), "PUT", "/other", &refs).await.expect("PUT"),
            403
        );
    }
}
