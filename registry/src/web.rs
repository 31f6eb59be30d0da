//! The web pages every Switchboard HTTP front serves: the chat client at `/` and the live cluster
//! dashboard at `/dashboard`.
//!
//! The pages are plain HTML, CSS and JavaScript kept under `registry/web/` and compiled into the binary
//! with `include_str!`, so there is no build step and nothing to install next to the binary. The chat
//! page is an ES module over the TypeScript client SDK, whose compiled output is committed under
//! `sdk/dist/` (the SDK's tests check it equals a fresh compile) and served at `/assets/sdk/`, so the
//! protocol logic exists once. The pages talk to the same origin only over HTTP (`/v1/assign`,
//! `/v1/nodes`) and then open a WebSocket to whichever node the registry names:
//!
//! ```text
//! browser ──GET /──────────────▶ this router (index.html, /assets/*, /assets/sdk/*)
//!         ──GET /v1/assign─────▶ registry API ─▶ {"node","url",...}
//!         ──WebSocket url──────▶ chat-node (wire protocol, chat-node/PROTOCOL.md)
//! ```
//!
//! Both the `registry` binary and a standalone `chat-node` merge [`router`] into their own routes, so
//! the paths here must not collide with `/v1/*`, `/ws`, `/healthz`, `/readyz` or `/metrics`.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// One embedded file: its text and the content type it is served with.
struct Asset {
    body: &'static str,
    content_type: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

const INDEX: Asset = Asset {
    body: include_str!("../web/index.html"),
    content_type: HTML,
};
const DASHBOARD: Asset = Asset {
    body: include_str!("../web/dashboard.html"),
    content_type: HTML,
};
const APP_JS: Asset = Asset {
    body: include_str!("../web/app.js"),
    content_type: JS,
};
const DASHBOARD_JS: Asset = Asset {
    body: include_str!("../web/dashboard.js"),
    content_type: JS,
};
/// The compiled SDK modules (`sdk/dist/*.js`), by the name the page and each other import them with.
const SDK: [(&str, Asset); 6] = [
    (
        "index.js",
        sdk_module(include_str!("../../sdk/dist/index.js")),
    ),
    (
        "client.js",
        sdk_module(include_str!("../../sdk/dist/client.js")),
    ),
    (
        "backoff.js",
        sdk_module(include_str!("../../sdk/dist/backoff.js")),
    ),
    (
        "emitter.js",
        sdk_module(include_str!("../../sdk/dist/emitter.js")),
    ),
    (
        "types.js",
        sdk_module(include_str!("../../sdk/dist/types.js")),
    ),
    (
        "upload.js",
        sdk_module(include_str!("../../sdk/dist/upload.js")),
    ),
];

const fn sdk_module(body: &'static str) -> Asset {
    Asset {
        body,
        content_type: JS,
    }
}
const STYLE_CSS: Asset = Asset {
    body: include_str!("../web/style.css"),
    content_type: CSS,
};
const ICON_SVG: Asset = Asset {
    body: include_str!("../web/icon.svg"),
    content_type: SVG,
};

/// The policy every page is served with: scripts and styles only from this origin. The registry may
/// name a node on another host or port, and attachments are uploaded to and shown from that node's
/// HTTP side, so network and images may also reach any http(s)/WebSocket endpoint; `blob:` images
/// are the previews of files about to be sent. No script, style or frame from anywhere else.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data: blob: http: https:; connect-src 'self' ws: wss: http: https:; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The routes of the web pages: `GET /` (chat client), `GET /dashboard` (cluster dashboard) and the
/// files they load under `/assets/` (the client SDK's modules under `/assets/sdk/`).
///
/// The router has no state, so it can be merged into any `Router<S>` with `Router::merge`.
pub fn router() -> Router {
    let router = Router::new()
        .route("/", get(|| serve(&INDEX)))
        .route("/dashboard", get(|| serve(&DASHBOARD)))
        .route("/assets/app.js", get(|| serve(&APP_JS)))
        .route("/assets/dashboard.js", get(|| serve(&DASHBOARD_JS)))
        .route("/assets/style.css", get(|| serve(&STYLE_CSS)))
        .route("/assets/icon.svg", get(|| serve(&ICON_SVG)));
    SDK.iter().fold(router, |router, (name, asset)| {
        router.route(&format!("/assets/sdk/{name}"), get(move || serve(asset)))
    })
}

async fn serve(asset: &'static Asset) -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            // Pages are small and change with the binary: always revalidate so an upgrade shows at once.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            ),
        ],
        asset.body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn get_page(path: &str) -> (StatusCode, String, String) {
        let response = router()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("router answers");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_default();
        let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).expect("utf-8"),
        )
    }

    #[tokio::test]
    async fn chat_page_is_served_at_root_and_loads_its_assets() {
        let (status, content_type, body) = get_page("/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, HTML);
        assert!(body.contains("/assets/app.js"));
        assert!(body.contains("/assets/style.css"));
        for asset in ["/assets/app.js", "/assets/style.css", "/assets/icon.svg"] {
            let (status, _, body) = get_page(asset).await;
            assert_eq!(status, StatusCode::OK, "{asset}");
            assert!(!body.is_empty(), "{asset}");
        }
    }

    #[tokio::test]
    async fn dashboard_is_served_with_its_script() {
        let (status, content_type, body) = get_page("/dashboard").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, HTML);
        assert!(body.contains("/assets/dashboard.js"));
        let (status, content_type, _) = get_page("/assets/dashboard.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, JS);
    }

    #[tokio::test]
    async fn pages_forbid_foreign_scripts_and_framing() {
        let response = router()
            .oneshot(Request::get("/").body(Body::empty()).expect("request"))
            .await
            .expect("router answers");
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        assert!(csp.contains("script-src 'self'"));
        assert!(csp.contains("connect-src 'self' ws: wss: http: https:"));
        assert!(csp.contains("img-src 'self' data: blob: http: https:"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(
            response.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
    }

    #[tokio::test]
    async fn pages_use_no_inline_script_or_style_the_policy_would_block() {
        for path in ["/", "/dashboard"] {
            let (_, _, body) = get_page(path).await;
            assert!(!body.contains("<script>"), "{path} has an inline script");
            assert!(!body.contains("style=\""), "{path} has an inline style");
            let handler = body
                .split(|c: char| c.is_whitespace())
                .any(|word| word.starts_with("on") && word.contains("=\""));
            assert!(!handler, "{path} has an inline event handler");
        }
    }

    #[tokio::test]
    async fn every_module_the_chat_page_imports_is_served_as_javascript() {
        let mut modules = vec![("/assets/app.js".to_owned(), APP_JS.body.to_owned())];
        let mut checked = 0;
        while let Some((path, body)) = modules.pop() {
            for line in body.lines() {
                let Some((_, rest)) = line.split_once(" from '") else {
                    continue;
                };
                let Some((spec, _)) = rest.split_once('\'') else {
                    continue;
                };
                if !line.starts_with("import ") && !line.starts_with("export ") {
                    continue;
                }
                let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                let target = match spec.strip_prefix("./") {
                    Some(rel) => format!("{dir}/{rel}"),
                    None => spec.to_owned(),
                };
                let (status, content_type, imported) = get_page(&target).await;
                assert_eq!(status, StatusCode::OK, "{path} imports {target}");
                assert_eq!(content_type, JS, "{target}");
                checked += 1;
                modules.push((target, imported));
            }
        }
        assert!(checked >= 4, "only {checked} imports followed");
    }

    #[tokio::test]
    async fn client_never_puts_text_into_markup() {
        let sdk = SDK.iter().map(|(_, asset)| asset.body);
        for script in [APP_JS.body, DASHBOARD_JS.body].into_iter().chain(sdk) {
            assert!(!script.contains("innerHTML"));
            assert!(!script.contains("outerHTML"));
            assert!(!script.contains("insertAdjacentHTML"));
        }
    }

    #[tokio::test]
    async fn unknown_paths_are_left_to_other_routers() {
        let (status, _, _) = get_page("/assets/nope.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
