//! The browser as a first-class client: one origin list behind CORS and the socket's
//! Origin check, and the `authed` answer to auth frames.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, Ws};

/// A CORS preflight for `POST /v1/projects` from `origin`.
async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.http
        .request(Method::OPTIONS, format!("{}/v1/projects", app.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[track_caller]
fn assert_preflight_allowed(response: &reqwest::Response, origin: &str) {
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(header(response, "access-control-allow-origin"), Some(origin));
    assert_eq!(header(response, "access-control-max-age"), Some("600"));
    let methods = header(response, "access-control-allow-methods").unwrap().to_ascii_lowercase();
    assert!(methods.contains("post") && methods.contains("patch"), "{methods}");
    let headers = header(response, "access-control-allow-headers").unwrap().to_ascii_lowercase();
    for needed in ["authorization", "content-type", "x-request-id"] {
        assert!(headers.contains(needed), "{headers}");
    }
    assert_eq!(header(response, "access-control-allow-credentials"), None, "tokens are bearer, never cookies");
}

#[track_caller]
fn assert_socket_refused(result: Result<Ws, tokio_tungstenite::tungstenite::Error>) {
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn wildcard_origins_govern_cors_and_socket_upgrades_alike() {
    let app = TestApp::spawn_with(|c| {
        c.allowed_origins = vec!["http://localhost:*".into(), "https://*.preview.example.com".into()]
    })
    .await;
    let alice = app.user_token("alice");
    for origin in ["http://localhost:5173", "http://localhost", "https://tab-1.preview.example.com"] {
        assert_preflight_allowed(&preflight(&app, origin).await, origin);
        let mut ws = Ws::connect(app.addr, Some(&alice), Some(origin), "").await.expect(origin);
        ws.send(json!({"type": "ping", "ref": "p"})).await;
        assert_eq!(ws.recv().await["type"], "pong");
    }
    for origin in [
        "https://localhost:5173",
        "https://a.b.preview.example.com",
        "https://preview.example.com",
        "https://evil.test",
        "null",
    ] {
        let refused = preflight(&app, origin).await;
        assert_eq!(header(&refused, "access-control-allow-origin"), None, "{origin}");
        // (tower-http still sends the static Allow-Methods/Max-Age; without Allow-Origin
        // the browser refuses the request.)
        assert_socket_refused(Ws::connect(app.addr, Some(&alice), Some(origin), "").await);
    }

    // An actual request: the origin is echoed and the headers a client reads are exposed.
    let origin = "http://localhost:3000";
    let response = app
        .http
        .post(format!("{}/v1/projects", app.base))
        .header("origin", origin)
        .bearer_auth(&alice)
        .json(&json!({"name": "from a browser"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header(&response, "access-control-allow-origin"), Some(origin));
    let exposed = header(&response, "access-control-expose-headers").unwrap().to_ascii_lowercase();
    assert!(exposed.contains("retry-after") && exposed.contains("x-request-id"), "{exposed}");
    let vary: Vec<String> =
        response.headers().get_all("vary").iter().map(|v| v.to_str().unwrap().to_ascii_lowercase()).collect();
    assert!(vary.iter().any(|v| v.contains("origin")), "{vary:?}");
}

#[tokio::test]
async fn star_allows_any_origin_and_the_hub_starts() {
    let app = TestApp::spawn_with(|c| c.allowed_origins = vec!["*".into()]).await;
    let origin = "https://anything.example.org";
    assert_preflight_allowed(&preflight(&app, origin).await, origin);
    let mut browser = Ws::connect(app.addr, None, Some(origin), "").await.unwrap();
    browser.send(json!({"type": "auth", "token": app.user_token("alice")})).await;
    assert_eq!(browser.recv().await["type"], "authed");
}

#[tokio::test]
async fn no_configured_origin_refuses_browsers_but_not_other_clients() {
    let app = TestApp::spawn().await;
    let refused = preflight(&app, "http://localhost:5173").await;
    assert_eq!(header(&refused, "access-control-allow-origin"), None);
    let alice = app.user_token("alice");
    assert_socket_refused(Ws::connect(app.addr, Some(&alice), Some("http://localhost:5173"), "").await);
    // Agents and servers send no Origin.
    Ws::connect(app.addr, Some(&alice), None, "").await.unwrap();
}

#[tokio::test]
async fn every_accepted_auth_frame_is_answered_with_authed() {
    let app = TestApp::spawn().await;
    let exp_of = |token: &str| {
        use base64::Engine;
        let claims = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        claims["exp"].as_i64().unwrap()
    };
    let expires_at = |frame: &serde_json::Value| {
        assert_eq!(frame["type"], "authed", "{frame}");
        assert_eq!(frame.as_object().unwrap().len(), 2, "{frame}");
        chrono::DateTime::parse_from_rfc3339(frame["expires_at"].as_str().unwrap()).unwrap().timestamp()
    };

    // First-frame auth (browsers).
    let token = app.user_token("alice");
    let mut browser = Ws::connect(app.addr, None, None, "").await.unwrap();
    browser.send(json!({"type": "auth", "token": token})).await;
    assert_eq!(expires_at(&browser.recv().await), exp_of(&token));

    // Header auth: no authed frame unless the client sends an auth frame.
    let mut agent = app.ws(&token).await;
    agent.send(json!({"type": "ping", "ref": "p"})).await;
    assert_eq!(agent.recv().await["type"], "pong");

    // Replacing the token on an open socket (either kind) answers with the new expiry.
    let fresh = synchub::auth::users::UserVerifier::new(Some(crate::helpers::JWT_SECRET), None, &[], None, None)
        .unwrap()
        .mint("alice", 7200)
        .unwrap();
    for ws in [&mut browser, &mut agent] {
        ws.send(json!({"type": "auth", "token": fresh})).await;
        assert_eq!(expires_at(&ws.recv().await), exp_of(&fresh));
    }
    // A refused replacement gets a close code, not authed.
    agent.send(json!({"type": "auth", "token": "garbage"})).await;
    assert_eq!(agent.close_code(Duration::from_secs(5)).await, Some(4001));
}
