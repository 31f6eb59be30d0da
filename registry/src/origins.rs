//! Which web origins may use a Switchboard service from a browser: the `--allowed-origins` allow-list
//! shared by the registry's CORS answers and chat-node's WebSocket `Origin` check.
//!
//! ```text
//!  Origin: https://chat.example ──▶ AllowedOrigins ──▶ same host as `Host`?  configured?  ──▶ allow / refuse
//!  (no Origin: not a browser)   ──▶ allowed (the check protects browsers' users, not the server)
//! ```
//!
//! An origin is `scheme://host[:port]`, compared case-insensitively, exactly as browsers send it.

/// Why `--allowed-origins` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// An entry is not `http(s)://host[:port]`.
    #[error(
        "--allowed-origins: {0:?} is not an origin; write scheme://host[:port], e.g. https://chat.example.com"
    )]
    Invalid(String),
}

/// The allow-list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    list: Vec<String>,
}

impl AllowedOrigins {
    /// The allow-list of `entries` (empty entries are skipped).
    pub fn new(entries: &[String]) -> Result<Self, OriginError> {
        let mut list = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let lower = entry.trim_end_matches('/').to_ascii_lowercase();
            let host = lower
                .strip_prefix("https://")
                .or_else(|| lower.strip_prefix("http://"));
            match host {
                Some(h) if !h.is_empty() && !h.contains(['/', '?', '#', '@', ' ', '*']) => {
                    list.push(lower)
                }
                _ => return Err(OriginError::Invalid(entry.to_owned())),
            }
        }
        Ok(Self { list })
    }

    /// The configured origins.
    pub fn configured(&self) -> &[String] {
        &self.list
    }

    /// Whether `origin` is one of the configured origins.
    pub fn is_configured(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.list.contains(&origin)
    }

    /// Whether a request with `origin` (the `Origin` header) to a server reached as `host` (the `Host`
    /// header) may proceed: no `Origin` (not a browser), the serving origin itself, or a configured one.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let lower = origin.to_ascii_lowercase();
        let origin_host = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"));
        if let (Some(o), Some(h)) = (origin_host, host)
            && o.eq_ignore_ascii_case(h)
        {
            return true;
        }
        self.is_configured(&lower)
    }
}

/// What a CORS answer allows, besides the origin it names.
#[derive(Clone, Copy, Debug)]
pub struct CorsPolicy {
    /// `Access-Control-Allow-Methods` of preflight answers.
    pub methods: &'static str,
    /// `Access-Control-Allow-Headers` of preflight answers, if any.
    pub allow_headers: Option<&'static str>,
    /// `Access-Control-Expose-Headers`, if any.
    pub expose_headers: Option<&'static str>,
}

/// Middleware body shared by every CORS-answering route: runs the request, then names its `Origin` in
/// `Access-Control-Allow-Origin` when it is one of `origins` (with `Vary: Origin` always; any other
/// origin gets no CORS headers, so the browser refuses the answer to it).
pub async fn answer_cors(
    origins: &AllowedOrigins,
    policy: CorsPolicy,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| origins.is_configured(o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("origin"));
    let Some(origin) = origin else {
        return response;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(policy.methods),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    if let Some(allow) = policy.allow_headers {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(allow),
        );
    }
    if let Some(expose) = policy.expose_headers {
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(expose),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serving_origin_configured_ones_and_non_browsers_are_allowed() {
        let allowed = AllowedOrigins::new(&["https://App.example/".into()]).expect("valid");
        assert!(allowed.allows(None, Some("node:8080")));
        assert!(allowed.allows(Some("http://node:8080"), Some("node:8080")));
        assert!(allowed.allows(Some("https://app.example"), Some("node:8080")));
        assert!(!allowed.allows(Some("https://evil.example"), Some("node:8080")));
        assert!(!allowed.allows(Some("null"), Some("node:8080")));
        assert!(!allowed.allows(Some("http://node:8081"), Some("node:8080")));
    }

    #[test]
    fn entries_must_be_origins() {
        for bad in ["*", "app.example", "https://", "https://a/b", "ftp://x"] {
            assert!(AllowedOrigins::new(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
