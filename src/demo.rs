//! The demo editor (CONTRACT sections 9 and 11) that `synchub dev` serves at `/`: the page
//! `clients/typescript/demo/src/index.html` as it is, and its script built into
//! `clients/typescript/demo/dist/app.js`, committed and embedded so that building the hub needs
//! no Node (`npm run check-demo` in CI proves the bundle equals a fresh build).
//!
//! Only `synchub dev` mounts it: a production hub's `/` stays the API's JSON 404. The page
//! reads the user token from its URL fragment (never sent to the server) or a field, so its
//! answers carry a strict Content-Security-Policy: scripts only from here, no frames.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("../clients/typescript/demo/src/index.html");
const APP_JS: &str = include_str!("../clients/typescript/demo/dist/app.js");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/` and `/app.js`; merged into the dev hub's router.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/app.js", get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidate each time: a rebuilt hub must not leave an old editor in the cache.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn fetch(path: &str) -> (StatusCode, String, String) {
        let response = router().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
        assert_eq!(response.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(response.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let body = String::from_utf8(to_bytes(response.into_body(), 1 << 22).await.unwrap().to_vec()).unwrap();
        (status, content_type, body)
    }

    #[tokio::test]
    async fn serves_the_page_and_its_script() {
        let (status, content_type, body) = fetch("/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/html"));
        assert!(body.contains(r#"<script type="module" src="app.js">"#));
        let (status, content_type, body) = fetch("/app.js").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/javascript"));
        assert!(body.contains("realtime:project:"), "the bundled client is in the script");
    }
}
