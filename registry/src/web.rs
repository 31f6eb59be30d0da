//! The web page served at `/` (placeholder until the chat client page lands here; it will also own
//! `/dashboard`). Static content only: the page talks to `/v1/assign` and then to the node it is given.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

/// Routes of the web page (`GET /`).
pub fn router() -> Router {
    Router::new().route("/", get(index))
}

async fn index() -> Html<&'static str> {
    Html(INDEX)
}

const INDEX: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Switchboard</title></head>
<body>
<h1>Switchboard</h1>
<p>The chat client page is coming. Meanwhile: <a href="/v1/assign">/v1/assign</a> names the node to
connect to, <a href="/v1/nodes">/v1/nodes</a> lists the nodes.</p>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn index_is_html() {
        let response = router()
            .oneshot(Request::get("/").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .expect("ascii")
                .starts_with("text/html")
        );
    }
}
