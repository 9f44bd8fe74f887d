//! Response headers every answer carries (`X-Content-Type-Options: nosniff`) and those
//! answers carrying a token or a signed URL carry (`Cache-Control: no-store`).

use reqwest::header::{CACHE_CONTROL, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

use crate::helpers::{TestApp, app_with_storage};

/// Sends a request; returns the status, the headers and the JSON body (Null otherwise).
async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = app.http.request(method, format!("{}{path}", app.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// A request to make: name, method, path, headers, and the status it must get.
type Case<'a> = (&'a str, Method, String, Vec<(&'a str, &'a str)>, StatusCode);

#[track_caller]
fn assert_nosniff(name: &str, headers: &HeaderMap) {
    assert_eq!(
        headers.get("x-content-type-options").and_then(|v| v.to_str().ok()),
        Some("nosniff"),
        "{name}: {headers:?}"
    );
}

#[track_caller]
fn assert_no_store(name: &str, headers: &HeaderMap) {
    let value = headers.get(CACHE_CONTROL).and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(value.split(',').any(|d| d.trim() == "no-store"), "{name}: Cache-Control {value:?}");
}

#[tokio::test]
async fn every_answer_says_nosniff() {
    let app = TestApp::spawn_with(|c| c.allowed_origins = vec!["https://editor.test".into()]).await;
    let alice = app.user_token("alice");
    let bearer = format!("Bearer {alice}");
    let p = app.create_project("alice", "headers").await;
    let cases: Vec<Case> = vec![
        ("healthz", Method::GET, "/healthz".into(), vec![], StatusCode::OK),
        ("readyz", Method::GET, "/readyz".into(), vec![], StatusCode::OK),
        ("metrics", Method::GET, "/metrics".into(), vec![], StatusCode::OK),
        ("openapi", Method::GET, "/openapi.json".into(), vec![], StatusCode::OK),
        ("projects", Method::GET, "/v1/projects".into(), vec![("authorization", &bearer)], StatusCode::OK),
        (
            "file 404",
            Method::GET,
            format!("/v1/projects/{p}/files/nope.txt"),
            vec![("authorization", &bearer)],
            StatusCode::NOT_FOUND,
        ),
        ("no token", Method::GET, "/v1/projects".into(), vec![], StatusCode::UNAUTHORIZED),
        ("unknown route", Method::GET, "/nope".into(), vec![], StatusCode::NOT_FOUND),
        ("unknown /v1 route", Method::POST, "/v1/nope".into(), vec![], StatusCode::NOT_FOUND),
        (
            "bad JSON",
            Method::POST,
            "/v1/projects".into(),
            vec![("authorization", &bearer), ("content-type", "application/json")],
            StatusCode::BAD_REQUEST,
        ),
        ("plain GET of the socket", Method::GET, "/v1/realtime".into(), vec![], StatusCode::BAD_REQUEST),
        (
            "CORS preflight",
            Method::OPTIONS,
            "/v1/projects".into(),
            vec![("origin", "https://editor.test"), ("access-control-request-method", "POST")],
            StatusCode::OK,
        ),
    ];
    for (name, method, path, headers, expected) in cases {
        let (status, headers, body) = raw(&app, method, &path, &headers, None).await;
        assert_eq!(status, expected, "{name}: {body}");
        assert_nosniff(name, &headers);
    }
    // A wrong method on a known route (whatever its status, the header is there).
    let (_, headers, _) = raw(&app, Method::PATCH, "/healthz", &[], None).await;
    assert_nosniff("wrong method", &headers);

    // WebSocket upgrades refused before the upgrade: bad token, foreign origin.
    use tungstenite::client::IntoClientRequest;
    for (name, header, value) in
        [("bad token", "authorization", "Bearer garbage"), ("foreign origin", "origin", "https://evil.test")]
    {
        let mut request = format!("ws://{}/v1/realtime", app.addr).into_client_request().unwrap();
        request.headers_mut().insert(header, value.parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Err(tungstenite::Error::Http(response)) => {
                assert!(response.status().is_client_error(), "{name}: {}", response.status());
                assert_eq!(
                    response.headers().get("x-content-type-options").map(|v| v.as_bytes()),
                    Some(&b"nosniff"[..]),
                    "upgrade refusal, {name}"
                );
            }
            other => panic!("{name}: expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
}

#[tokio::test]
async fn answers_with_tokens_or_signed_urls_are_not_stored() {
    let (app, _storage) = app_with_storage().await;
    let p = app.create_project("alice", "no-store").await;
    app.write("alice", &p, "a.txt", "a").await;
    let service = format!("Bearer {}", app.service_token());
    let service = [("authorization", service.as_str())];

    let (status, headers, session) =
        raw(&app, Method::POST, &format!("/v1/projects/{p}/sessions"), &service, Some(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    assert!(session["token"].is_string() && session["snapshot"]["url"].is_string(), "{session}");
    assert_no_store("sessions create", &headers);
    assert_nosniff("sessions create", &headers);
    let session_id = session["session_id"].as_str().unwrap();

    let (status, headers, body) =
        raw(&app, Method::POST, &format!("/v1/projects/{p}/snapshots"), &service, Some(json!({}))).await;
    assert!(status.is_success() && body["url"].is_string(), "{status} {body}");
    assert_no_store("snapshots create", &headers);

    let (status, headers, body) =
        raw(&app, Method::GET, &format!("/v1/projects/{p}/snapshots/latest"), &service, None).await;
    assert!(status.is_success() && body["url"].is_string(), "{status} {body}");
    assert_no_store("snapshots latest", &headers);

    let (status, headers, minted) =
        raw(&app, Method::POST, &format!("/v1/projects/{p}/tokens"), &service, Some(json!({"session_id": session_id})))
            .await;
    assert!(status.is_success() && minted["token"].is_string(), "{status} {minted}");
    assert_no_store("tokens mint", &headers);

    let container = format!("Bearer {}", minted["token"].as_str().unwrap());
    let (status, headers, body) =
        raw(&app, Method::POST, "/v1/tokens/refresh", &[("authorization", container.as_str())], None).await;
    assert!(status.is_success() && body["token"].is_string(), "{status} {body}");
    assert_no_store("tokens refresh", &headers);
    // The container may read the latest snapshot too: same header.
    let (status, headers, _) = raw(
        &app,
        Method::GET,
        &format!("/v1/projects/{p}/snapshots/latest"),
        &[("authorization", container.as_str())],
        None,
    )
    .await;
    assert!(status.is_success());
    assert_no_store("snapshots latest (container)", &headers);
}
