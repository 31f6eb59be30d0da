//! The flags and environment of a node's attachments, and what they resolve to.

use crate::sniff::Types;
use crate::store::{S3Config, Store};
use std::path::PathBuf;
use std::time::Duration;
use switchboard_runtime::duration::within;

/// The environment variable of the S3 access key id (never a flag: a command line is public).
pub const ENV_ACCESS_KEY_ID: &str = "SWITCHBOARD_ATTACHMENTS_S3_ACCESS_KEY_ID";
/// The environment variable of the S3 secret access key.
pub const ENV_SECRET_ACCESS_KEY: &str = "SWITCHBOARD_ATTACHMENTS_S3_SECRET_ACCESS_KEY";
/// Files of a credentials directory (a mounted Secret).
pub const ACCESS_KEY_FILE: &str = "accessKeyId";
/// See [`ACCESS_KEY_FILE`].
pub const SECRET_KEY_FILE: &str = "secretAccessKey";

/// Attachments most messages may carry.
pub const MAX_ATTACHMENTS: usize = 10;
/// Bytes of every upload chunk but the last (and of every store part): 8 MiB.
pub const CHUNK_BYTES: u64 = 8 * 1024 * 1024;

/// Flags of attachments (flattened into a node's arguments).
#[derive(clap::Args, Clone, Debug)]
pub struct AttachmentArgs {
    /// Where attachments are kept: `file:///DIR`, `s3://BUCKET` (with --attachments-s3-endpoint for an
    /// S3-compatible server; credentials from SWITCHBOARD_ATTACHMENTS_S3_ACCESS_KEY_ID and
    /// SWITCHBOARD_ATTACHMENTS_S3_SECRET_ACCESS_KEY or --attachments-s3-credentials-dir) or `off`.
    /// Default: a standalone node keeps them in a fresh directory under the system's temporary
    /// directory; a node with Redis has none (`off`).
    #[arg(long, env = "SWITCHBOARD_ATTACHMENTS_STORE")]
    pub attachments_store: Option<String>,
    /// Endpoint of an S3-compatible server (path-style requests); unset for AWS S3.
    #[arg(long, env = "SWITCHBOARD_ATTACHMENTS_S3_ENDPOINT")]
    pub attachments_s3_endpoint: Option<String>,
    /// Region of the bucket.
    #[arg(
        long,
        env = "SWITCHBOARD_ATTACHMENTS_S3_REGION",
        default_value = "us-east-1"
    )]
    pub attachments_s3_region: String,
    /// A directory with the files `accessKeyId` and `secretAccessKey` (a mounted Secret), read instead
    /// of the two environment variables.
    #[arg(long, env = "SWITCHBOARD_ATTACHMENTS_S3_CREDENTIALS_DIR")]
    pub attachments_s3_credentials_dir: Option<PathBuf>,
    /// Largest attachment, in bytes.
    #[arg(long, env = "SWITCHBOARD_MAX_ATTACHMENT_BYTES", default_value_t = 100 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=(64u64 << 30)))]
    pub max_attachment_bytes: u64,
    /// Bytes of attachments one user may send in 24 hours.
    #[arg(long, env = "SWITCHBOARD_ATTACHMENT_QUOTA_BYTES", default_value_t = 1024 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub attachment_quota_bytes: u64,
    /// Accepted types (comma-separated MIME types), checked against the bytes of every file.
    #[arg(long, env = "SWITCHBOARD_ATTACHMENT_TYPES", value_parser = Types::parse)]
    pub attachment_types: Option<Types>,
    /// An attachment not uploaded completely within this time of its message is failed (`expired`)
    /// and its parts deleted (1s to 7d).
    #[arg(long, env = "SWITCHBOARD_UPLOAD_TIMEOUT", default_value = "1h",
          value_parser = within(Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600)))]
    pub upload_timeout: Duration,
    /// How long a download URL handed to a member works (1m to 7d).
    #[arg(long, env = "SWITCHBOARD_ATTACHMENT_URL_TTL", default_value = "1h",
          value_parser = within(Duration::from_secs(60), Duration::from_secs(7 * 24 * 3600)))]
    pub attachment_url_ttl: Duration,
    /// Upload requests this node serves at once (each holds at most one 8 MiB chunk); more get 429.
    #[arg(long, env = "SWITCHBOARD_MAX_UPLOADS", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_uploads: u64,
}

/// What a node does with attachments.
#[derive(Clone, Debug)]
pub struct AttachmentConfig {
    /// The store.
    pub store: Store,
    /// A directory this node made for itself (removed when the node stops).
    pub scratch: Option<PathBuf>,
    /// Largest file.
    pub max_bytes: u64,
    /// Bytes per user per 24 h.
    pub quota_bytes: u64,
    /// Accepted types.
    pub types: Types,
    /// Time to complete an upload.
    pub upload_timeout: Duration,
    /// Lifetime of download URLs.
    pub url_ttl: Duration,
    /// Concurrent upload requests.
    pub max_uploads: usize,
}

impl AttachmentArgs {
    /// The configuration, `None` when attachments are off. `standalone`: the node has no Redis (then
    /// the default is a local directory).
    pub fn resolve(&self, standalone: bool) -> Result<Option<AttachmentConfig>, String> {
        let (store, scratch) = match self.attachments_store.as_deref().map(str::trim) {
            Some("off") => return Ok(None),
            None | Some("") if !standalone => return Ok(None),
            None | Some("") => {
                let dir = std::env::temp_dir().join(format!(
                    "switchboard-attachments-{}-{:08x}",
                    std::process::id(),
                    fastrand::u32(..)
                ));
                let store = Store::local(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                (store, Some(dir))
            }
            Some(url) if url.starts_with("file://") => {
                let dir = PathBuf::from(&url["file://".len()..]);
                if !dir.is_absolute() {
                    return Err(format!(
                        "--attachments-store {url}: the directory must be absolute (file:///var/lib/...)"
                    ));
                }
                let store = Store::local(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                (store, None)
            }
            Some(url) if url.starts_with("s3://") => {
                let bucket = url["s3://".len()..].trim_end_matches('/');
                if bucket.is_empty() || bucket.contains('/') {
                    return Err(format!("--attachments-store {url}: write s3://BUCKET"));
                }
                let (access_key_id, secret_access_key) = self.credentials()?;
                let config = S3Config {
                    bucket: bucket.to_owned(),
                    endpoint: self
                        .attachments_s3_endpoint
                        .clone()
                        .filter(|e| !e.is_empty()),
                    region: self.attachments_s3_region.clone(),
                    access_key_id,
                    secret_access_key,
                };
                (Store::s3(&config).map_err(|e| e.to_string())?, None)
            }
            Some(other) => {
                return Err(format!(
                    "--attachments-store {other}: use file:///DIR, s3://BUCKET or off"
                ));
            }
        };
        Ok(Some(AttachmentConfig {
            store,
            scratch,
            max_bytes: self.max_attachment_bytes,
            quota_bytes: self.attachment_quota_bytes,
            types: self.attachment_types.clone().unwrap_or_default(),
            upload_timeout: self.upload_timeout,
            url_ttl: self.attachment_url_ttl,
            max_uploads: usize::try_from(self.max_uploads).unwrap_or(16),
        }))
    }

    fn credentials(&self) -> Result<(String, String), String> {
        if let Some(dir) = &self.attachments_s3_credentials_dir {
            let read = |name: &str| {
                std::fs::read_to_string(dir.join(name))
                    .map(|s| s.trim().to_owned())
                    .map_err(|e| format!("S3 credentials: {}: {e}", dir.join(name).display()))
            };
            return Ok((read(ACCESS_KEY_FILE)?, read(SECRET_KEY_FILE)?));
        }
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("an s3:// attachment store needs {ENV_ACCESS_KEY_ID} and {ENV_SECRET_ACCESS_KEY} in the environment (or --attachments-s3-credentials-dir); {name} is not set"))
        };
        Ok((var(ENV_ACCESS_KEY_ID)?, var(ENV_SECRET_ACCESS_KEY)?))
    }
}
