//! The access policy over HTTP, route by route as `/openapi.json` lists them: every route
//! that declares a token need refuses a request without one, a container token outside its
//! project or session learns nothing (404) on every route, and the document's security of
//! each route is what the policy admits. The full principal × need × scope table is the
//! unit test in `src/auth/policy.rs`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, app_with_storage, assert_error};

/// Every operation of the document: (method, path template, operation).
fn operations(spec: &Value) -> Vec<(Method, String, Value)> {
    let mut operations = Vec::new();
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            operations.push((method, path.clone(), operation.clone()));
        }
    }
    assert!(operations.len() > 20, "the document lists the routes");
    operations
}

/// The token kinds a route's security admits, sorted.
fn admitted(operation: &Value) -> Vec<String> {
    let mut kinds: Vec<String> = operation["security"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|requirement| requirement.as_object().unwrap().keys().cloned())
        .collect();
    kinds.sort();
    kinds
}

/// A concrete URL for a path template: `{id}` is `id`, other parameters are plain values.
fn url(template: &str, id: &str) -> String {
    template.replace("{id}", id).replace("{path}", "a.txt").replace("{user_id}", "bob").replace("{key}", "x")
}

async fn spec(app: &TestApp) -> Value {
    let response = app.http.get(format!("{}/openapi.json", app.base)).send().await.unwrap();
    response.json().await.unwrap()
}

#[tokio::test]
async fn every_route_that_declares_a_need_refuses_a_request_without_a_token() {
    let app = TestApp::spawn().await;
    let spec = spec(&app).await;
    let project = uuid::Uuid::new_v4().to_string();
    for (method, template, operation) in operations(&spec) {
        // The socket authenticates itself (header or first frame): its own tests.
        if admitted(&operation).is_empty() || template == "/v1/realtime" {
            continue;
        }
        let answer = app.call(method.clone(), &url(&template, &project), None, Some(json!({}))).await;
        assert_error(&answer, 401, "unauthenticated");
        assert_eq!(answer.1["error"]["message"], "missing bearer token", "{method} {template}");
    }
}

#[tokio::test]
async fn a_container_token_outside_its_project_or_session_gets_404_on_every_route() {
    let (app, _storage) = app_with_storage().await;
    let own = app.create_project("alice", "own").await;
    let other = app.create_project("alice", "other").await;
    let service = app.service_token();
    let (_, session) = app.post(&format!("/v1/projects/{own}/sessions"), &service, json!({})).await;
    let container = session["token"].as_str().expect("a container token").to_string();
    let (_, another) = app.post(&format!("/v1/projects/{other}/sessions"), &service, json!({})).await;
    let another_session = another["session_id"].as_str().unwrap().to_string();

    let spec = spec(&app).await;
    let mut checked = 0;
    for (method, template, _) in operations(&spec) {
        let id = if template.starts_with("/v1/projects/{id}") {
            &other
        } else if template.starts_with("/v1/sessions/{id}") {
            &another_session
        } else {
            continue;
        };
        let body = json!({"session_id": another_session, "content": "x", "name": "x", "state": {}, "base_revision": 0,
                          "role": "viewer", "commit": "c", "files": [], "from": "a", "to": "b", "upserts": [], "deletes": []});
        // Valid queries and bodies: the answer is the policy's, whatever runs first.
        let query = if template.ends_with("/events") { "?since=0" } else { "" };
        let target = format!("{}{query}", url(&template, id));
        let answer = app.call(method.clone(), &target, Some(&container), Some(body)).await;
        assert_eq!(answer.0.as_u16(), 404, "{method} {template}: {}", answer.1);
        assert_eq!(answer.1["error"]["code"], "not_found", "{method} {template}");
        checked += 1;
    }
    assert!(checked > 20, "{checked} routes checked");
    // The other session is untouched, and the token still works on its own project.
    let (status, _) = app.get(&format!("/v1/sessions/{another_session}"), &service).await;
    assert_eq!(status, 200);
    let (status, _) = app.get(&format!("/v1/projects/{own}/files"), &container).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_documents_security_is_what_the_policy_admits() {
    let app = TestApp::spawn().await;
    let spec = spec(&app).await;
    let all = ["containerToken", "serviceToken", "userToken"];
    let expected: Vec<(Method, &str, &[&str])> = vec![
        (Method::GET, "/healthz", &[]),
        (Method::GET, "/v1/objects/{key}", &[]),
        (Method::GET, "/v1/realtime", &all),
        (Method::GET, "/v1/projects", &["userToken"]),
        (Method::GET, "/v1/projects/{id}", &["userToken"]),
        (Method::GET, "/v1/projects/{id}/files", &all),
        (Method::GET, "/v1/projects/{id}/events", &all),
        (Method::PUT, "/v1/projects/{id}/files/{path}", &["userToken"]),
        (Method::PATCH, "/v1/projects/{id}/files/{path}", &["userToken"]),
        (Method::PUT, "/v1/projects/{id}/base", &["serviceToken", "userToken"]),
        (Method::POST, "/v1/projects/{id}/sessions", &["serviceToken"]),
        (Method::GET, "/v1/projects/{id}/snapshots/latest", &["containerToken", "serviceToken"]),
        (Method::POST, "/v1/tokens/refresh", &["containerToken"]),
        (Method::GET, "/v1/sessions/{id}", &all),
        (Method::DELETE, "/v1/sessions/{id}", &["serviceToken"]),
    ];
    for (method, path, kinds) in expected {
        let operation = &spec["paths"][path][method.as_str().to_lowercase()];
        assert_eq!(admitted(operation), kinds, "{method} {path}");
    }
}
