//! The bad-token matrix, over every way a token reaches the hub: HTTP `Authorization`, the
//! `Authorization` header of a WebSocket upgrade (refused with HTTP 401 before the
//! upgrade), and the first `{"type":"auth"}` frame (refused with close 4001, or 4009 for an
//! expired token). User tokens (HS256 secret and RS256 JWKS, with issuer and audience
//! configured) and hub tokens (issuer `synchub`) alike.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

use crate::auth::{AUDIENCE, ISSUER, KID, claims, fixture, hs256, jwks_server, now, rs256, unsigned};
use crate::helpers::{JWT_SECRET, SIGNING_KEY, TestApp, Ws};

/// A route every valid token may call without a 401: a session that does not exist is 404
/// for users and hub tokens alike.
fn probe() -> String {
    format!("/v1/sessions/{}", uuid::Uuid::new_v4())
}

/// The refusal the first-frame path gives for an HTTP error code.
fn close_code_for(code: &str) -> u16 {
    if code == "token_expired" { 4009 } else { 4001 }
}

/// Headers longer than this may also be refused by the HTTP server itself (431).
const OVERSIZED: usize = 16 * 1024;

/// HTTP with a raw `Authorization` value: 401 with the contract's error body.
async fn http_refuses(app: &TestApp, name: &str, authorization: &[u8], code: &str) {
    let response = app
        .http
        .get(format!("{}{}", app.base, probe()))
        .header("authorization", reqwest::header::HeaderValue::from_bytes(authorization).unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE && authorization.len() > OVERSIZED {
        return;
    }
    assert_eq!(status, StatusCode::UNAUTHORIZED, "HTTP, {name}: {body}");
    assert_eq!(body["error"]["code"], code, "HTTP, {name}: {body}");
}

/// A WebSocket upgrade with a raw `Authorization` value: refused before the upgrade.
async fn upgrade_refuses(app: &TestApp, name: &str, authorization: &[u8], code: &str) {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/v1/realtime", app.addr).into_client_request().unwrap();
    request.headers_mut().insert("authorization", tungstenite::http::HeaderValue::from_bytes(authorization).unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) if response.status() == 431 && authorization.len() > OVERSIZED => {}
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401, "upgrade, {name}");
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], code, "upgrade, {name}: {body}");
        }
        other => panic!("upgrade, {name}: expected 401, got {:?}", other.map(|_| ())),
    }
}

/// The first-frame path: the socket is closed with the refusal's code.
async fn auth_frame_refuses(app: &TestApp, name: &str, frame: Value, close: u16) {
    let mut ws = Ws::connect(app.addr, None, None, "").await.expect("upgrade");
    ws.send(frame).await;
    assert_eq!(ws.close_code(Duration::from_secs(5)).await, Some(close), "auth frame, {name}");
}

/// A token refused on all three paths with `code`.
async fn refused_everywhere(app: &TestApp, name: &str, token: &str, code: &str) {
    let header = format!("Bearer {token}");
    http_refuses(app, name, header.as_bytes(), code).await;
    upgrade_refuses(app, name, header.as_bytes(), code).await;
    auth_frame_refuses(app, name, json!({"type": "auth", "token": token}), close_code_for(code)).await;
}

/// Reads frames (skipping any `authed`) until a pong.
async fn pong(ws: &mut Ws, name: &str) {
    ws.send(json!({"type": "ping", "ref": "p"})).await;
    for _ in 0..4 {
        let frame = ws.next(Duration::from_secs(5)).await.unwrap_or_else(|code| panic!("{name}: closed {code:?}"));
        if frame["type"] == "pong" {
            return;
        }
    }
    panic!("{name}: no pong");
}

/// A token accepted on all three paths.
async fn accepted_everywhere(app: &TestApp, name: &str, token: &str) {
    let (status, body) = app.get(&probe(), token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "HTTP, {name}: {body}");
    let mut by_header = Ws::connect(app.addr, Some(token), None, "").await.unwrap_or_else(|e| panic!("{name}: {e}"));
    pong(&mut by_header, name).await;
    let mut by_frame = Ws::connect(app.addr, None, None, "").await.unwrap();
    by_frame.send(json!({"type": "auth", "token": token})).await;
    pong(&mut by_frame, name).await;
}

fn rs256_with(alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(KID.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A validly signed user token padded to about `bytes`.
fn padded(bytes: usize) -> String {
    hs256(&claims(json!({"pad": "x".repeat(bytes)})), JWT_SECRET.as_bytes())
}

fn hub_claims(overrides: Value) -> Value {
    let mut claims = json!({"iss": "synchub", "typ": "service", "sub": "service", "iat": now(), "exp": now() + 600});
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

/// Secret + JWKS, issuer and audience configured: the full matrix.
#[tokio::test]
async fn bad_user_and_hub_tokens_are_refused_on_every_path() {
    let jwks_url = jwks_server().await;
    let app = TestApp::spawn_with(|c| {
        c.jwks_url = Some(jwks_url);
        c.jwt_issuer = Some(ISSUER.into());
        c.jwt_audience = Some(AUDIENCE.into());
    })
    .await;
    let rs = |overrides: Value| rs256(&claims(overrides), "rsa_private.pem", Some(KID));
    let hs = |overrides: Value| hs256(&claims(overrides), JWT_SECRET.as_bytes());
    let hub = |overrides: Value| hs256(&hub_claims(overrides), SIGNING_KEY.as_bytes());

    // What must keep working: both key kinds, an `aud` array that contains the audience
    // (identity providers issue those), a past `nbf`, an `exp`/`nbf` inside the leeway,
    // and hub tokens.
    let valid: Vec<(&str, String)> = vec![
        ("RS256", rs(json!({}))),
        ("HS256", hs(json!({}))),
        ("RS256 aud array", rs(json!({"aud": ["other", AUDIENCE]}))),
        ("HS256 aud array", hs(json!({"aud": [AUDIENCE]}))),
        ("past nbf", rs(json!({"nbf": now() - 60}))),
        ("nbf within leeway", hs(json!({"nbf": now() + 5}))),
        ("service token", app.service_token()),
        ("hub token with past nbf", hub(json!({"nbf": now() - 60}))),
    ];
    for (name, token) in &valid {
        accepted_everywhere(&app, name, token).await;
    }
    // Just past `exp`, inside the leeway: HTTP accepts it (a socket would close with 4009
    // at `exp` anyway, so it is not tried there).
    let (status, body) = app.get(&probe(), &hs(json!({"exp": now() - 5}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "exp within leeway: {body}");

    let public_pem = fixture("rsa_public.pem");
    let big = padded(64 * 1024);
    assert!(big.len() > 64 * 1024);
    let table: Vec<(&str, String, &str)> = vec![
        // Signature and algorithm.
        ("alg none", unsigned(&claims(json!({}))), "unauthenticated"),
        ("alg none, no dot", unsigned(&claims(json!({}))).trim_end_matches('.').to_string(), "unauthenticated"),
        (
            "alg None",
            format!("{}.{}.", b64(br#"{"alg":"None"}"#), b64(claims(json!({})).to_string().as_bytes())),
            "unauthenticated",
        ),
        ("RS256 wrong key", rs256(&claims(json!({})), "rsa_other_private.pem", Some(KID)), "unauthenticated"),
        ("HS256 wrong secret", hs256(&claims(json!({})), b"not-the-secret"), "unauthenticated"),
        ("HS256 signed with the RSA public key", hs256(&claims(json!({})), &public_pem), "unauthenticated"),
        ("RS384 (not pinned)", rs256_with(Algorithm::RS384, &claims(json!({}))), "unauthenticated"),
        ("PS256 with an RSA key", rs256_with(Algorithm::PS256, &claims(json!({}))), "unauthenticated"),
        (
            "signature stripped",
            {
                let t = rs(json!({}));
                t[..t.rfind('.').unwrap() + 1].to_string()
            },
            "unauthenticated",
        ),
        // Time.
        ("expired", rs(json!({"exp": now() - 3600})), "token_expired"),
        ("expired beyond the leeway", hs(json!({"exp": now() - 61})), "token_expired"),
        ("future nbf", rs(json!({"nbf": now() + 3600})), "unauthenticated"),
        ("nbf beyond the leeway", hs(json!({"nbf": now() + 61})), "unauthenticated"),
        ("no exp", rs(json!({"exp": null})), "unauthenticated"),
        ("exp as a string", hs(json!({"exp": (now() + 600).to_string()})), "unauthenticated"),
        // Issuer.
        ("no iss (RS256)", rs(json!({"iss": null})), "unauthenticated"),
        ("no iss (HS256)", hs(json!({"iss": null})), "unauthenticated"),
        ("wrong iss", rs(json!({"iss": "https://evil.test"})), "unauthenticated"),
        ("iss array", rs(json!({"iss": [ISSUER]})), "unauthenticated"),
        ("iss array (HS256)", hs(json!({"iss": [ISSUER, "https://evil.test"]})), "unauthenticated"),
        // Audience.
        ("no aud (RS256)", rs(json!({"aud": null})), "unauthenticated"),
        ("no aud (HS256)", hs(json!({"aud": null})), "unauthenticated"),
        ("wrong aud", rs(json!({"aud": "other"})), "unauthenticated"),
        ("aud array without the audience", rs(json!({"aud": ["other", "another"]})), "unauthenticated"),
        ("empty aud array", hs(json!({"aud": []})), "unauthenticated"),
        // Subject.
        ("no sub", rs(json!({"sub": null})), "unauthenticated"),
        ("empty sub", hs(json!({"sub": ""})), "unauthenticated"),
        ("numeric sub", hs(json!({"sub": 42})), "unauthenticated"),
        // Shape and size.
        ("garbage", "not-a-token".into(), "unauthenticated"),
        ("three dots", "a.b.c".into(), "unauthenticated"),
        ("header not JSON", format!("{}.{}.sig", b64(b"nope"), b64(b"{}")), "unauthenticated"),
        ("header JSON array", format!("{}.{}.sig", b64(b"[]"), b64(b"{}")), "unauthenticated"),
        ("payload not JSON", format!("{}.{}.sig", b64(br#"{"alg":"HS256"}"#), b64(b"nope")), "unauthenticated"),
        ("64 KiB of garbage", "a".repeat(64 * 1024), "unauthenticated"),
        ("64 KiB validly signed token", big, "unauthenticated"),
        // Hub tokens (issuer `synchub`).
        ("hub: alg none", unsigned(&hub_claims(json!({}))), "unauthenticated"),
        ("hub: wrong key", hs256(&hub_claims(json!({})), b"not-the-signing-key"), "unauthenticated"),
        ("hub: signed with the user secret", hs256(&hub_claims(json!({})), JWT_SECRET.as_bytes()), "unauthenticated"),
        ("hub: RS256", rs256(&hub_claims(json!({})), "rsa_private.pem", Some(KID)), "unauthenticated"),
        ("hub: expired", hub(json!({"exp": now() - 3600})), "token_expired"),
        ("hub: future nbf", hub(json!({"nbf": now() + 3600})), "unauthenticated"),
        ("hub: no exp", hub(json!({"exp": null})), "unauthenticated"),
        ("hub: unknown typ", hub(json!({"typ": "root"})), "unauthenticated"),
        ("hub: container without a session", hub(json!({"typ": "container"})), "unauthenticated"),
    ];
    for (name, token, code) in &table {
        refused_everywhere(&app, name, token, code).await;
    }
}

/// `Authorization` values that are not one bearer token are refused, on HTTP and on the
/// upgrade (never ignored, so an upgrade cannot fall back to an unauthenticated socket);
/// auth frames that are not one string token close the socket with 4001.
#[tokio::test]
async fn garbage_authorization_headers_and_auth_frames_are_refused() {
    let app = TestApp::spawn().await;
    let valid = app.user_token("alice");
    let headers: Vec<(&str, Vec<u8>)> = vec![
        ("Basic", b"Basic YWxpY2U6c2VjcmV0".to_vec()),
        ("scheme only", b"Bearer".to_vec()),
        ("empty token", b"Bearer ".to_vec()),
        ("two tokens", format!("Bearer {valid} {valid}").into_bytes()),
        ("token scheme", format!("Token {valid}").into_bytes()),
        ("no scheme", valid.clone().into_bytes()),
        ("not UTF-8", b"Bearer \xff\xfe".to_vec()),
    ];
    for (name, value) in &headers {
        http_refuses(&app, name, value, "unauthenticated").await;
        upgrade_refuses(&app, name, value, "unauthenticated").await;
    }
    // The scheme is case-insensitive (RFC 9110).
    for scheme in ["bearer", "BEARER"] {
        let response = app
            .http
            .get(format!("{}/v1/projects", app.base))
            .header("authorization", format!("{scheme} {valid}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{scheme}");
    }

    let frames = vec![
        ("token not a string", json!({"type": "auth", "token": 42})),
        ("token array", json!({"type": "auth", "token": [valid]})),
        ("no token", json!({"type": "auth"})),
        ("null token", json!({"type": "auth", "token": null})),
        ("join first", json!({"type": "join", "ref": "1", "channel": "realtime:project:x", "since": null})),
    ];
    for (name, frame) in frames {
        auth_frame_refuses(&app, name, frame, 4001).await;
    }
}

/// With only a secret configured, asymmetric tokens are refused; with only a JWKS, HS256
/// tokens (the classic confusion: the RSA public key used as the HMAC secret) are refused.
#[tokio::test]
async fn algorithm_confusion_across_configurations() {
    let secret_only = TestApp::spawn().await;
    let rs = rs256(&json!({"sub": "alice", "exp": now() + 600}), "rsa_private.pem", Some(KID));
    refused_everywhere(&secret_only, "RS256 without a JWKS", &rs, "unauthenticated").await;

    let jwks_url = jwks_server().await;
    let jwks_only = TestApp::spawn_with(|c| {
        c.jwt_secret = None;
        c.jwks_url = Some(jwks_url);
    })
    .await;
    accepted_everywhere(&jwks_only, "RS256", &rs).await;
    let confused = hs256(&json!({"sub": "alice", "exp": now() + 600}), &fixture("rsa_public.pem"));
    refused_everywhere(&jwks_only, "HS256 with the public key, no secret", &confused, "unauthenticated").await;
    let hs = hs256(&json!({"sub": "alice", "exp": now() + 600}), JWT_SECRET.as_bytes());
    refused_everywhere(&jwks_only, "HS256 without a secret", &hs, "unauthenticated").await;
}
