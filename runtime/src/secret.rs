//! Secrets read from files: passwords and signing keys are given as a path (a mounted Kubernetes
//! Secret, a file only the service user can read), never as a flag value that every local user sees in
//! `ps`. The value is never logged; errors name the path only.

use std::path::{Path, PathBuf};

/// Largest secret file read; a password or HMAC key is tens of bytes, so anything bigger is a wrong path.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Why a secret file could not be used. Never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read the secret file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty (after trimming a trailing newline).
    #[error("the secret file {path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_SECRET_BYTES`].
    #[error(
        "the secret file {path} is larger than {MAX_SECRET_BYTES} bytes; is it the right file?"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not UTF-8 text (passwords must be text).
    #[error("the secret file {path} is not UTF-8 text")]
    NotText {
        /// The file.
        path: PathBuf,
    },
}

/// Reads a secret: the file's bytes without trailing `\r`/`\n` (an editor's or `echo`'s newline is
/// never part of the secret).
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, Error> {
    let read = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > MAX_SECRET_BYTES {
        return Err(Error::TooLarge {
            path: path.to_owned(),
        });
    }
    let mut bytes = std::fs::read(path).map_err(read)?;
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(Error::Empty {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// Reads a text secret (a password), as [`read_bytes`].
pub fn read_text(path: &Path) -> Result<String, Error> {
    String::from_utf8(read_bytes(path)?).map_err(|_| Error::NotText {
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, content: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sb-secret-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("secret");
        std::fs::write(&path, content).expect("write");
        path
    }

    #[test]
    fn a_trailing_newline_is_not_part_of_the_secret() {
        let path = temp("newline", b"s3cret\r\n");
        assert_eq!(read_text(&path).expect("read"), "s3cret");
    }

    #[test]
    fn empty_missing_and_huge_files_are_refused_without_content() {
        assert!(matches!(
            read_text(&temp("empty", b"\n")),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            read_text(Path::new("/nonexistent/switchboard-secret")),
            Err(Error::Read { .. })
        ));
        let big = vec![b'x'; MAX_SECRET_BYTES as usize + 1];
        let err = read_bytes(&temp("big", &big)).expect_err("too large");
        assert!(!err.to_string().contains("xxxx"));
    }
}
