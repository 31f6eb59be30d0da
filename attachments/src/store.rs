//! Where attachment bytes live: an S3 bucket (any S3-compatible server) or a local directory, behind
//! one small interface shaped by resumable uploads.
//!
//! ```text
//! begin(key)                      ─▶ upload id        S3: CreateMultipartUpload   local: uploads/{upload}/
//! put_part(key, upload, n, bytes) ─▶ part id          S3: UploadPart n+1          local: uploads/{upload}/{n}
//! complete(key, upload, parts)                        S3: CompleteMultipartUpload local: concatenate, rename
//! abort(key, upload)                                  S3: AbortMultipartUpload    local: remove the parts
//! put / get(range) / delete / probe
//! ```
//!
//! A part is at most one upload chunk (8 MiB), so memory per upload is bounded by one chunk; reads are
//! streams. Keys are `objects/{id}` and `thumbs/{id}`: ASCII letters, digits, `.`, `-`, `_` and `/`.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// What went wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such object or upload.
    #[error("not found")]
    NotFound,
    /// The key is not one this module makes.
    #[error("invalid key '{0}'")]
    InvalidKey(String),
    /// The store refused the credentials or the operation.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The bucket does not exist.
    #[error("the bucket does not exist: {0}")]
    BucketMissing(String),
    /// Anything else: unreachable, timed out, a failed request or disk.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        let text = switchboard_runtime::report::chain(&e);
        match e {
            object_store::Error::NotFound { .. } if text.contains("NoSuchBucket") => {
                Error::BucketMissing(text)
            }
            object_store::Error::NotFound { .. } => Error::NotFound,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => Error::AccessDenied(text),
            _ if text.contains("NoSuchBucket") => Error::BucketMissing(text),
            _ if [
                "AccessDenied",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "403 Forbidden",
            ]
            .iter()
            .any(|m| text.contains(m)) =>
            {
                Error::AccessDenied(text)
            }
            _ if text.contains("NoSuchUpload") || text.contains("NoSuchKey") => Error::NotFound,
            _ => Error::Unavailable(text),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound
        } else {
            Error::Unavailable(e.to_string())
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// Where an S3 bucket is and how to log in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Endpoint of an S3-compatible server (path-style addressing); `None` for AWS.
    pub endpoint: Option<String>,
    /// Region (`us-east-1` when not given).
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key (never logged: [`Store`]'s `Debug` leaves it out).
    pub secret_access_key: String,
}

/// An object store.
#[derive(Clone)]
pub struct Store {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    S3 { s3: Arc<AmazonS3>, describe: String },
    Local { dir: PathBuf },
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Time one store request may take (the S3 client's own timeout; bodies stream within it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Time to connect to the store.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 200
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'))
        && !key
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidKey(key.chars().take(60).collect()))
    }
}

impl Store {
    /// A store over an S3 bucket.
    pub fn s3(config: &S3Config) -> Result<Self> {
        let region = if config.region.is_empty() {
            "us-east-1"
        } else {
            &config.region
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT),
            )
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let s3 = builder
            .build()
            .map_err(|e| Error::Unavailable(format!("S3 configuration: {e}")))?;
        let describe = match &config.endpoint {
            Some(e) => format!("s3://{} at {e}", config.bucket),
            None => format!("s3://{} (AWS {region})", config.bucket),
        };
        Ok(Self {
            inner: Inner::S3 {
                s3: Arc::new(s3),
                describe,
            },
        })
    }

    /// A store in a local directory (created if missing).
    pub fn local(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(dir.join("uploads"))?;
        Ok(Self {
            inner: Inner::Local { dir },
        })
    }

    /// Where the store is, for logs and status (no secrets).
    pub fn describe(&self) -> String {
        match &self.inner {
            Inner::S3 { describe, .. } => describe.clone(),
            Inner::Local { dir } => format!("file://{}", dir.display()),
        }
    }

    /// Whether the store answers with these credentials: lists one key of the bucket (or checks the
    /// directory).
    pub async fn probe(&self) -> Result<()> {
        match &self.inner {
            Inner::S3 { s3, .. } => {
                let prefix = ObjectPath::from("objects/probe");
                let mut list = s3.list(Some(&prefix));
                match list.next().await {
                    None | Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => Err(e.into()),
                }
            }
            Inner::Local { dir } => {
                let meta = tokio::fs::metadata(dir).await?;
                if meta.is_dir() {
                    Ok(())
                } else {
                    Err(Error::Unavailable(format!(
                        "{} is not a directory",
                        dir.display()
                    )))
                }
            }
        }
    }

    /// Starts a multipart upload of `key`; returns its id.
    pub async fn begin(&self, key: &str) -> Result<String> {
        check_key(key)?;
        match &self.inner {
            Inner::S3 { s3, .. } => Ok(s3.create_multipart(&ObjectPath::from(key)).await?),
            Inner::Local { dir } => {
                let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
                tokio::fs::create_dir_all(dir.join("uploads").join(&id)).await?;
                Ok(id)
            }
        }
    }

    /// Stores part `index` (0, 1, 2, …) of an upload; returns the id `complete` needs. Every part but
    /// the last must be at least 5 MiB on S3.
    pub async fn put_part(
        &self,
        key: &str,
        upload: &str,
        index: usize,
        data: Bytes,
    ) -> Result<String> {
        check_key(key)?;
        match &self.inner {
            Inner::S3 { s3, .. } => {
                let part = s3
                    .put_part(
                        &ObjectPath::from(key),
                        &upload.to_owned(),
                        index,
                        data.into(),
                    )
                    .await?;
                Ok(part.content_id)
            }
            Inner::Local { dir } => {
                let parts = local_upload(dir, upload)?;
                if !tokio::fs::try_exists(&parts).await? {
                    return Err(Error::NotFound);
                }
                let tmp = parts.join(format!("{index:06}.tmp"));
                let mut f = tokio::fs::File::create(&tmp).await?;
                f.write_all(&data).await?;
                f.sync_data().await?;
                tokio::fs::rename(&tmp, parts.join(format!("{index:06}"))).await?;
                Ok(format!("{index:06}"))
            }
        }
    }

    /// Joins the parts (in order) into the object `key`.
    pub async fn complete(&self, key: &str, upload: &str, parts: &[String]) -> Result<()> {
        check_key(key)?;
        match &self.inner {
            Inner::S3 { s3, .. } => {
                let parts = parts
                    .iter()
                    .map(|p| PartId {
                        content_id: p.clone(),
                    })
                    .collect();
                s3.complete_multipart(&ObjectPath::from(key), &upload.to_owned(), parts)
                    .await?;
                Ok(())
            }
            Inner::Local { dir } => {
                let from = local_upload(dir, upload)?;
                let to = dir.join(key);
                if let Some(parent) = to.parent() {
                    tokio::fs::create_dir_all(parent).await?;
                }
                let tmp = from.join("joined.tmp");
                let mut out = tokio::fs::File::create(&tmp).await?;
                for p in parts {
                    check_key(p)?;
                    let mut part = tokio::fs::File::open(from.join(p)).await?;
                    tokio::io::copy(&mut part, &mut out).await?;
                }
                out.sync_all().await?;
                tokio::fs::rename(&tmp, &to).await?;
                tokio::fs::remove_dir_all(&from).await?;
                Ok(())
            }
        }
    }

    /// Gives up an upload and deletes its parts.
    pub async fn abort(&self, key: &str, upload: &str) -> Result<()> {
        check_key(key)?;
        match &self.inner {
            Inner::S3 { s3, .. } => {
                match s3
                    .abort_multipart(&ObjectPath::from(key), &upload.to_owned())
                    .await
                    .map_err(Error::from)
                {
                    Ok(()) | Err(Error::NotFound) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Inner::Local { dir } => {
                match tokio::fs::remove_dir_all(local_upload(dir, upload)?).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Stores a small object whole (thumbnails).
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        check_key(key)?;
        match &self.inner {
            Inner::S3 { s3, .. } => {
                s3.put(&ObjectPath::from(key), data.into()).await?;
                Ok(())
            }
            Inner::Local { dir } => {
                let to = dir.join(key);
                if let Some(parent) = to.parent() {
                    tokio::fs::create_dir_all(parent).await?;
                }
                let tmp = to.with_extension("tmp");
                tokio::fs::write(&tmp, &data).await?;
                tokio::fs::rename(&tmp, &to).await?;
                Ok(())
            }
        }
    }

    /// The object's size and a stream of its bytes in `range` (all of it when `None`; the range is
    /// clipped to the object).
    pub async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<(u64, ByteStream)> {
        check_key(key)?;
        match &self.inner {
            Inner::S3 { s3, .. } => {
                let options = GetOptions {
                    range: range.map(GetRange::Bounded),
                    ..GetOptions::default()
                };
                let got = s3.get_opts(&ObjectPath::from(key), options).await?;
                let size = got.meta.size;
                Ok((size, got.into_stream().map_err(Error::from).boxed()))
            }
            Inner::Local { dir } => {
                let mut file = tokio::fs::File::open(dir.join(key)).await?;
                let size = file.metadata().await?.len();
                let (start, end) = match range {
                    Some(r) => (r.start.min(size), r.end.min(size)),
                    None => (0, size),
                };
                file.seek(std::io::SeekFrom::Start(start)).await?;
                let limited = tokio::io::AsyncReadExt::take(file, end.saturating_sub(start));
                let stream = tokio_util::io::ReaderStream::with_capacity(limited, 64 * 1024)
                    .map_err(Error::from)
                    .boxed();
                Ok((size, stream))
            }
        }
    }

    /// The whole object, refused when larger than `max` bytes.
    pub async fn read_all(&self, key: &str, max: u64) -> Result<Bytes> {
        let (size, mut stream) = self.get(key, None).await?;
        if size > max {
            return Err(Error::Unavailable(format!(
                "{size} bytes is more than {max}"
            )));
        }
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if (out.len() + chunk.len()) as u64 > max {
                return Err(Error::Unavailable(format!("more than {max} bytes")));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.into())
    }

    /// Deletes an object (nothing to do when it is not there).
    pub async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let result = match &self.inner {
            Inner::S3 { s3, .. } => s3.delete(&ObjectPath::from(key)).await.map_err(Error::from),
            Inner::Local { dir } => tokio::fs::remove_file(dir.join(key))
                .await
                .map_err(Error::from),
        };
        match result {
            Ok(()) | Err(Error::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn local_upload(dir: &Path, upload: &str) -> Result<PathBuf> {
    if upload.len() == 32 && upload.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(dir.join("uploads").join(upload))
    } else {
        Err(Error::NotFound)
    }
}

#[cfg(test)]
mod tests;
