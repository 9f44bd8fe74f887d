//! The JWT table: user tokens from a JWKS (RS256) and an HS256 secret; every forgery and
//! misconfiguration answers 401 with the right code.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, TestApp, assert_error};

pub const ISSUER: &str = "https://idp.test";
pub const AUDIENCE: &str = "synchub-test";
pub const KID: &str = "test-key-1";

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/api/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Serves the JWKS fixture on a loopback port.
pub async fn jwks_server() -> String {
    let jwks: Value = serde_json::from_slice(&fixture("jwks.json")).unwrap();
    let router = axum::Router::new().route("/jwks.json", axum::routing::get(move || async move { axum::Json(jwks) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/jwks.json")
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn claims(overrides: Value) -> Value {
    let mut claims = json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "iat": now()});
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

pub fn rs256(claims: &Value, key_file: &str, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(&fixture(key_file)).unwrap()).unwrap()
}

pub fn hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).unwrap()
}

pub fn unsigned(claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(claims))
}

#[tokio::test]
async fn jwt_table() {
    let jwks_url = jwks_server().await;
    let app = TestApp::spawn_with(|c| {
        c.jwks_url = Some(jwks_url);
        c.jwt_issuer = Some(ISSUER.into());
        c.jwt_audience = Some(AUDIENCE.into());
    })
    .await;

    let valid = rs256(&claims(json!({})), "rsa_private.pem", Some(KID));
    let (status, body) = app.get("/v1/projects", &valid).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The HS256 secret works too, with the same issuer/audience rules.
    let (status, _) = app.get("/v1/projects", &hs256(&claims(json!({})), JWT_SECRET.as_bytes())).await;
    assert_eq!(status, StatusCode::OK);

    let public_pem = fixture("rsa_public.pem");
    let mut rs384 = Header::new(Algorithm::RS384);
    rs384.kid = Some(KID.into());
    let rs384 = jsonwebtoken::encode(
        &rs384,
        &claims(json!({})),
        &EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap(),
    )
    .unwrap();
    let table: Vec<(&str, String, &str)> = vec![
        ("expired", rs256(&claims(json!({"exp": now() - 3600})), "rsa_private.pem", Some(KID)), "token_expired"),
        ("wrong key", rs256(&claims(json!({})), "rsa_other_private.pem", Some(KID)), "unauthenticated"),
        ("unknown kid", rs256(&claims(json!({})), "rsa_private.pem", Some("nope")), "unauthenticated"),
        ("no kid", rs256(&claims(json!({})), "rsa_private.pem", None), "unauthenticated"),
        ("alg none", unsigned(&claims(json!({}))), "unauthenticated"),
        ("HS/RS confusion", hs256(&claims(json!({})), &public_pem), "unauthenticated"),
        ("alg not pinned (RS384)", rs384, "unauthenticated"),
        ("wrong aud", rs256(&claims(json!({"aud": "other"})), "rsa_private.pem", Some(KID)), "unauthenticated"),
        (
            "wrong iss",
            rs256(&claims(json!({"iss": "https://evil.test"})), "rsa_private.pem", Some(KID)),
            "unauthenticated",
        ),
        ("no exp", rs256(&claims(json!({"exp": null})), "rsa_private.pem", Some(KID)), "unauthenticated"),
        ("no sub", rs256(&claims(json!({"sub": null})), "rsa_private.pem", Some(KID)), "unauthenticated"),
        ("HS256 wrong secret", hs256(&claims(json!({})), b"not-the-secret"), "unauthenticated"),
        ("garbage", "not-a-token".into(), "unauthenticated"),
        ("three dots", "a.b.c".into(), "unauthenticated"),
        ("empty", "".into(), "unauthenticated"),
        (
            "forged hub token",
            hs256(
                &json!({"iss": "synchub", "typ": "service", "sub": "x", "exp": now() + 60, "iat": now()}),
                JWT_SECRET.as_bytes(),
            ),
            "unauthenticated",
        ),
    ];
    for (name, token, code) in table {
        let answer = app.get("/v1/projects", &token).await;
        assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{name}: {}", answer.1);
        assert_eq!(answer.1["error"]["code"], code, "{name}: {}", answer.1);
    }
}

#[tokio::test]
async fn hs_rs_confusion_without_a_secret_and_service_tokens() {
    let jwks_url = jwks_server().await;
    let app = TestApp::spawn_with(|c| {
        c.jwt_secret = None;
        c.jwks_url = Some(jwks_url);
    })
    .await;
    let confused = hs256(&json!({"sub": "alice", "exp": now() + 600}), &fixture("rsa_public.pem"));
    assert_error(&app.get("/v1/projects", &confused).await, 401, "unauthenticated");
    // Service tokens are not user tokens: user routes refuse them.
    let answer = app.get("/v1/projects", &app.service_token()).await;
    assert_error(&answer, 403, "forbidden");
}
