//! What a file is, found from its first bytes — never taken from the client — and whether the node
//! accepts it.

/// Bytes looked at to find a file's type.
pub const HEAD_BYTES: usize = 8192;

/// The types a node accepts unless told otherwise (`--attachment-types`).
pub const DEFAULT_TYPES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "video/mp4",
    "video/webm",
    "video/quicktime",
    "audio/mpeg",
    "audio/ogg",
    "audio/wav",
    "application/pdf",
    "application/zip",
    "text/plain",
];

/// Types a browser may show in place (served `inline`); everything else is served as a download.
/// SVG and HTML are never inline: they can carry scripts.
const INLINE: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "video/mp4",
    "video/webm",
    "audio/mpeg",
    "audio/ogg",
    "audio/wav",
    "application/pdf",
    "text/plain",
];

/// The allow list of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Types {
    allowed: Vec<String>,
}

impl Default for Types {
    fn default() -> Self {
        Self {
            allowed: DEFAULT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
        }
    }
}

impl Types {
    /// A list from `a/b,c/d` (MIME types, exact; at least one).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut allowed = Vec::new();
        for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let t = t.to_ascii_lowercase();
            if !is_mime(&t) {
                return Err(format!("'{t}' is not a MIME type like image/png"));
            }
            if !allowed.contains(&t) {
                allowed.push(t);
            }
        }
        if allowed.is_empty() {
            return Err("the list of attachment types is empty".to_owned());
        }
        Ok(Self { allowed })
    }

    /// Whether `mime` (exact, lower case) is allowed.
    pub fn allows(&self, mime: &str) -> bool {
        self.allowed.iter().any(|a| a == mime)
    }

    /// The allowed types, in the order given.
    pub fn list(&self) -> &[String] {
        &self.allowed
    }
}

/// Whether `t` has the shape of a MIME type (`type/subtype`, token characters, at most 100 bytes).
pub fn is_mime(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    t.len() <= 100 && matches!(t.split_once('/'), Some((a, b)) if token(a) && token(b))
}

/// The type of a file from its first bytes (at most [`HEAD_BYTES`] are looked at); `None` when the
/// bytes match no type this module knows.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let head = &head[..head.len().min(HEAD_BYTES)];
    if let Some(kind) = infer::get(head) {
        return Some(normalize(kind.mime_type()));
    }
    is_text(head).then_some("text/plain")
}

fn normalize(mime: &'static str) -> &'static str {
    match mime {
        "audio/x-wav" | "audio/vnd.wave" => "audio/wav",
        "audio/x-mpeg" | "audio/mp3" => "audio/mpeg",
        other => other,
    }
}

/// UTF-8 (a character cut at the end of the sample is fine) without NUL or control characters other
/// than tab, newline, carriage return and form feed.
fn is_text(head: &[u8]) -> bool {
    if head.is_empty() {
        return false;
    }
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => match std::str::from_utf8(&head[..e.valid_up_to()]) {
            Ok(s) => s,
            Err(_) => return false,
        },
        Err(_) => return false,
    };
    valid
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x0c'))
}

/// Why a file's bytes were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The bytes match no known type.
    #[error("the file's bytes are not of any type this node accepts ({declared} was declared)")]
    Unknown {
        /// What the client said.
        declared: String,
    },
    /// The bytes are of a type that is not allowed.
    #[error("the file's bytes are {found}, which this node does not accept")]
    NotAllowed {
        /// What the bytes are.
        found: &'static str,
    },
    /// The bytes are of another kind than declared (an image declared, a PDF found).
    #[error("the file was declared {declared} but its bytes are {found}")]
    Mismatch {
        /// What the client said.
        declared: String,
        /// What the bytes are.
        found: &'static str,
    },
}

/// Checks a file's first bytes against the allow list and the declared type: the found type must be
/// allowed and of the declared family (`image/…` for `image/…`, and so on; exactly the declared type
/// for `application/…`). Returns the found type, which is what the file is served as.
pub fn check(types: &Types, declared: &str, head: &[u8]) -> Result<&'static str, Refused> {
    let Some(found) = sniff(head) else {
        return Err(Refused::Unknown {
            declared: declared.to_owned(),
        });
    };
    if !types.allows(found) {
        return Err(Refused::NotAllowed { found });
    }
    let family = |t: &str| t.split('/').next().unwrap_or("").to_owned();
    let same = if family(declared) == "application" {
        declared == found
    } else {
        family(declared) == family(found)
    };
    if !same {
        return Err(Refused::Mismatch {
            declared: declared.to_owned(),
            found,
        });
    }
    Ok(found)
}

/// Whether a found type may be shown in place by a browser.
pub fn inline(found: &str) -> bool {
    INLINE.contains(&found)
}

/// Whether a found type is an image this crate can measure and make a thumbnail of.
pub fn is_image(found: &str) -> bool {
    matches!(
        found,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
    const PDF: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n";
    const ELF: &[u8] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0>\0";

    #[test]
    fn types_come_from_the_bytes() {
        assert_eq!(sniff(PNG), Some("image/png"));
        assert_eq!(sniff(PDF), Some("application/pdf"));
        assert_eq!(sniff(b"hello\nworld\t\xc3\xa9"), Some("text/plain"));
        // a multi-byte character cut by the sample is still text
        assert_eq!(sniff(b"caf\xc3"), Some("text/plain"));
        assert_eq!(sniff(b"\0\x01\x02\x03binary"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn declared_and_found_must_agree_and_be_allowed() {
        let t = Types::default();
        assert_eq!(check(&t, "image/png", PNG), Ok("image/png"));
        // the family counts for media: a PNG declared as JPEG is still an image
        assert_eq!(check(&t, "image/jpeg", PNG), Ok("image/png"));
        assert!(matches!(
            check(&t, "image/png", PDF),
            Err(Refused::Mismatch {
                found: "application/pdf",
                ..
            })
        ));
        assert!(matches!(
            check(&t, "application/zip", PDF),
            Err(Refused::Mismatch { .. })
        ));
        assert!(matches!(
            check(&t, "application/octet-stream", ELF),
            Err(Refused::NotAllowed { .. } | Refused::Unknown { .. })
        ));
        assert!(matches!(
            check(&t, "text/plain", b"\0\0\0\0"),
            Err(Refused::Unknown { .. })
        ));
        assert_eq!(check(&t, "text/plain", b"notes\n"), Ok("text/plain"));
    }

    #[test]
    fn allow_lists_are_checked() {
        assert!(Types::parse("image/png, IMAGE/JPEG").is_ok_and(|t| t.allows("image/jpeg")));
        assert!(Types::parse("png").is_err());
        assert!(Types::parse(" , ").is_err());
        assert!(is_mime("application/vnd.ms-excel"));
        assert!(!is_mime("a/b c"));
        assert!(!inline("image/svg+xml"));
        assert!(!inline("application/zip"));
        assert!(inline("image/png"));
    }
}
