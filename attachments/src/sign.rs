//! Signed, short-lived URLs: an HMAC-SHA256 over what the URL allows (its purpose, the attachment and
//! the expiry), keyed by a secret every node of a cluster shares.
//!
//! ```text
//! /v1/uploads/{id}?exp=1767229200000&sig=<hex(hmac(key, "upload\n{id}\n{exp}"))>
//! ```
//!
//! A URL is handed only to whoever may use it (an upload URL to the sender, download URLs to members),
//! so holding a valid one is the permission.

use ring::hmac;

/// What a signed URL allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Upload the bytes of an attachment.
    Upload,
    /// Download an attachment.
    Download,
    /// Download an attachment's thumbnail.
    Thumbnail,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Upload => "upload",
            Purpose::Download => "download",
            Purpose::Thumbnail => "thumbnail",
        }
    }
}

/// Why a signature was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The signature is missing, malformed or was not made with the cluster's key for this purpose.
    #[error("the URL's signature is not valid for this attachment")]
    Forged,
    /// The signature is genuine but its time is up.
    #[error("the URL expired; ask for a fresh one")]
    Expired,
}

/// Signs and checks URLs with one key.
#[derive(Clone)]
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer over `secret` (at least 32 random bytes, shared by the cluster's nodes).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn tag(&self, purpose: Purpose, id: &str, exp: u64) -> hmac::Tag {
        let msg = format!("{}\n{id}\n{exp}", purpose.as_str());
        hmac::sign(&self.key, msg.as_bytes())
    }

    /// The query string (`exp=…&sig=…`) of a URL allowing `purpose` on `id` until `exp` (ms since the
    /// epoch).
    pub fn query(&self, purpose: Purpose, id: &str, exp: u64) -> String {
        format!("exp={exp}&sig={}", hex(self.tag(purpose, id, exp).as_ref()))
    }

    /// Checks a URL's `exp` and `sig` at time `now` (ms).
    pub fn check(
        &self,
        purpose: Purpose,
        id: &str,
        exp: u64,
        sig: &str,
        now: u64,
    ) -> Result<(), Invalid> {
        let Some(sig) = unhex(sig) else {
            return Err(Invalid::Forged);
        };
        let msg = format!("{}\n{id}\n{exp}", purpose.as_str());
        hmac::verify(&self.key, msg.as_bytes(), &sig).map_err(|_| Invalid::Forged)?;
        if now > exp {
            return Err(Invalid::Expired);
        }
        Ok(())
    }
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A fresh random secret for a signer (standalone nodes; a cluster keeps one in its store).
pub fn random_secret() -> Vec<u8> {
    let rng = ring::rand::SystemRandom::new();
    let mut secret = vec![0u8; 32];
    if ring::rand::SecureRandom::fill(&rng, &mut secret).is_err() {
        // The system generator does not fail on Linux; never fall back to a guessable key.
        for b in &mut secret {
            *b = fastrand::u8(..);
        }
    }
    secret
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(q: &str) -> (u64, String) {
        let mut exp = 0;
        let mut sig = String::new();
        for kv in q.split('&') {
            match kv.split_once('=') {
                Some(("exp", v)) => exp = v.parse().unwrap_or(0),
                Some(("sig", v)) => sig = v.to_owned(),
                _ => {}
            }
        }
        (exp, sig)
    }

    #[test]
    fn a_signature_opens_only_its_purpose_and_attachment_until_it_expires() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef");
        let (exp, sig) = parts(&s.query(Purpose::Download, "abc.0", 1_000));
        assert_eq!(exp, 1_000);
        assert_eq!(s.check(Purpose::Download, "abc.0", exp, &sig, 999), Ok(()));
        assert_eq!(
            s.check(Purpose::Download, "abc.0", exp, &sig, 1_000),
            Ok(())
        );
        assert_eq!(
            s.check(Purpose::Download, "abc.0", exp, &sig, 1_001),
            Err(Invalid::Expired)
        );
        assert_eq!(
            s.check(Purpose::Upload, "abc.0", exp, &sig, 0),
            Err(Invalid::Forged)
        );
        assert_eq!(
            s.check(Purpose::Download, "abc.1", exp, &sig, 0),
            Err(Invalid::Forged)
        );
        // a later expiry cannot be written into the URL by hand
        assert_eq!(
            s.check(Purpose::Download, "abc.0", exp + 1, &sig, 0),
            Err(Invalid::Forged)
        );
        let other = Signer::new(b"another key, another cluster.....");
        assert_eq!(
            other.check(Purpose::Download, "abc.0", exp, &sig, 0),
            Err(Invalid::Forged)
        );
        assert_eq!(
            s.check(Purpose::Download, "abc.0", exp, "zz", 0),
            Err(Invalid::Forged)
        );
    }

    #[test]
    fn random_secrets_differ() {
        assert_ne!(random_secret(), random_secret());
        assert_eq!(random_secret().len(), 32);
    }
}
