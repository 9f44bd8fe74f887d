//! CONTRACT section 8 on a real `synchub serve` process: one access line per request with
//! the request id echoed, no token or file content in the log; readiness through an S3
//! outage; LISTEN reconnects counted.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, SIGNING_KEY, TestApp, Ws, fresh_database, user_token};
use crate::hub_process::HubProcess;

/// One request: its answer's status, body and echoed `X-Request-Id`.
async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value, String) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let id = response.headers().get("x-request-id").expect("X-Request-Id echoed").to_str().unwrap().to_owned();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, id)
}

/// What the access line of a request must say.
struct Expected {
    request_id: String,
    method: &'static str,
    route: &'static str,
    status: u16,
    actor: String,
    project_id: Option<String>,
    session_id: Option<String>,
}

#[tokio::test]
async fn a_session_of_activity_logs_one_access_line_per_request_and_no_secret() {
    let storage = tempfile::tempdir().unwrap();
    let hub = HubProcess::start_logging(&fresh_database().await, |command| {
        command.env("SYNCHUB_STORAGE_DIR", storage.path());
    })
    .await;
    let base = format!("http://{}", hub.addr);
    let http = reqwest::Client::new();
    let alice = user_token("alice");
    let service = crate::helpers::service_token();
    let content = format!("file-content-{}", uuid::Uuid::new_v4().simple());
    let mut expected = Vec::new();

    // The client's request id is kept and echoed.
    let (status, project, id) = send(
        http.post(format!("{base}/v1/projects"))
            .bearer_auth(&alice)
            .header("x-request-id", "client-chosen.id-1")
            .json(&json!({"name": "logs"})),
    )
    .await;
    assert_eq!((status, id.as_str()), (StatusCode::CREATED, "client-chosen.id-1"), "{project}");
    let p = project["id"].as_str().unwrap().to_owned();
    let user = |request_id: String, method, route, status| Expected {
        request_id,
        method,
        route,
        status,
        actor: "user:alice".into(),
        project_id: Some(p.clone()),
        session_id: None,
    };
    expected.push(Expected { project_id: None, ..user(id, "POST", "/v1/projects", 201) });

    // Without one, a fresh id is generated and echoed.
    let (status, _, id) = send(
        http.put(format!("{base}/v1/projects/{p}/files/src/secret.ts"))
            .bearer_auth(&alice)
            .json(&json!({"content": content})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    expected.push(user(id, "PUT", "/v1/projects/{id}/files/{*path}", 200));
    let (status, _, id) =
        send(http.get(format!("{base}/v1/projects/{p}/files/src/secret.ts")).bearer_auth(&alice)).await;
    expected.push(user(id, "GET", "/v1/projects/{id}/files/{*path}", status.as_u16()));

    // A preview session: the orchestrator, then the container's own token.
    let (status, session, id) =
        send(http.post(format!("{base}/v1/projects/{p}/sessions")).bearer_auth(&service).json(&json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let session_id = session["session_id"].as_str().unwrap().to_owned();
    let container = session["token"].as_str().unwrap().to_owned();
    let snapshot_url = session["snapshot"]["url"].as_str().unwrap().to_owned();
    expected.push(Expected { actor: "service".into(), ..user(id, "POST", "/v1/projects/{id}/sessions", 201) });
    let (status, _, id) = send(http.get(format!("{base}/v1/sessions/{session_id}")).bearer_auth(&service)).await;
    expected.push(Expected {
        request_id: id,
        method: "GET",
        route: "/v1/sessions/{id}",
        status: status.as_u16(),
        actor: "service".into(),
        project_id: None,
        session_id: Some(session_id.clone()),
    });
    let (status, _, id) =
        send(http.get(format!("{base}/v1/projects/{p}/files?include_content=true")).bearer_auth(&container)).await;
    expected.push(Expected {
        actor: format!("container:{session_id}"),
        session_id: Some(session_id.clone()),
        ..user(id, "GET", "/v1/projects/{id}/files", status.as_u16())
    });
    // The signed snapshot URL (its signature must not be logged either).
    let (status, _, id) = send(http.get(&snapshot_url)).await;
    assert_eq!(status, StatusCode::OK);
    expected.push(Expected {
        request_id: id,
        method: "GET",
        route: "/v1/objects/{*key}",
        status: 200,
        actor: "anonymous".into(),
        project_id: None,
        session_id: None,
    });

    // A socket: its upgrade is a request too.
    let mut ws = Ws::connect(hub.addr, Some(&alice), None, "").await.unwrap();
    ws.join(&p, Some(0)).await;
    drop(ws);

    // A 401: a token that verifies nothing, and an unknown route.
    let bogus = "not.a-valid.token-0123456789";
    let (status, _, id) = send(http.get(format!("{base}/v1/projects")).bearer_auth(bogus)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    expected.push(Expected {
        request_id: id,
        method: "GET",
        route: "/v1/projects",
        status: 401,
        actor: "anonymous".into(),
        project_id: None,
        session_id: None,
    });
    let (status, _, id) = send(http.get(format!("{base}/no/such/route?token={bogus}"))).await;
    expected.push(Expected {
        request_id: id,
        method: "GET",
        route: "unmatched",
        status: status.as_u16(),
        actor: "anonymous".into(),
        project_id: None,
        session_id: None,
    });

    // Log lines of the last requests may still be on their way through the pipe.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = hub.stop_and_read_log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON log line: {line}")))
        .collect();
    let access: Vec<&Value> = lines.iter().filter(|line| line["target"] == "synchub::access").collect();
    for want in &expected {
        let matching: Vec<&&Value> = access.iter().filter(|line| line["request_id"] == want.request_id).collect();
        assert_eq!(matching.len(), 1, "one access line for {} {}:\n{log}", want.method, want.route);
        let line = matching[0];
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["method"], want.method, "{line}");
        assert_eq!(line["route"], want.route, "{line}");
        assert_eq!(line["status"], want.status, "{line}");
        assert_eq!(line["actor"], want.actor.as_str(), "{line}");
        assert!(line["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{line}");
        assert_eq!(line["project_id"].as_str(), want.project_id.as_deref(), "{line}");
        assert_eq!(line["session_id"].as_str(), want.session_id.as_deref(), "{line}");
    }
    let upgrade = access.iter().find(|line| line["route"] == "/v1/realtime").expect("the upgrade's access line");
    assert_eq!(upgrade["status"], 101, "{upgrade}");

    for secret in [&alice, &service, &container, bogus, &content, JWT_SECRET, SIGNING_KEY] {
        assert!(!log.contains(secret), "the log carries a secret or file content: {secret}\n{log}");
    }
    let signature = snapshot_url.split("sig=").nth(1).expect("a signed URL");
    assert!(!log.contains(signature), "the log carries a URL signature\n{log}");
    for line in &access {
        assert!(!line.to_string().contains("secret.ts"), "an access line carries a raw request path: {line}");
    }
}

#[tokio::test]
async fn readiness_survives_an_s3_outage_and_writes_still_succeed() {
    // Nothing listens on this port: every S3 call fails at once (connection refused).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let hub = HubProcess::start_with(&fresh_database().await, |command| {
        command
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::null())
            .env("SYNCHUB_S3_ENDPOINT", format!("http://{dead}"))
            .env("SYNCHUB_S3_BUCKET", "snapshots")
            .env("SYNCHUB_S3_PATH_STYLE", "true")
            .env("AWS_ACCESS_KEY_ID", "synchub-test-access")
            .env("AWS_SECRET_ACCESS_KEY", "synchub-test-secret-0123456789");
    })
    .await;
    let base = format!("http://{}", hub.addr);
    let http = reqwest::Client::new();
    let response = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let ready: Value = response.json().await.unwrap();
    assert_eq!(ready, json!({"database": true, "migrated": true, "storage": "unreachable"}));

    // Editors are served: a project and a file write.
    let alice = user_token("alice");
    let project: Value = http
        .post(format!("{base}/v1/projects"))
        .bearer_auth(&alice)
        .json(&json!({"name": "s3 down"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let p = project["id"].as_str().unwrap();
    let write = http
        .put(format!("{base}/v1/projects/{p}/files/a.txt"))
        .bearer_auth(&alice)
        .json(&json!({"content": "still writing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), StatusCode::OK);
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_not_migrated() {
    let app = TestApp::spawn().await;
    let admin = app.sql().await;
    admin.batch_execute("RESET ROLE; ALTER TABLE refinery_schema_history RENAME TO history_moved").await.unwrap();
    let (status, ready) = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready, json!({"database": true, "migrated": false, "storage": "not_configured"}));
    admin.batch_execute("ALTER TABLE history_moved RENAME TO refinery_schema_history").await.unwrap();
    let (status, ready) = app.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
}

/// The `synchub_listen_reconnects_total` sample of a scrape.
async fn listen_reconnects(app: &TestApp) -> u64 {
    let text = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("synchub_listen_reconnects_total "))
        .and_then(|value| value.parse().ok())
        .expect("synchub_listen_reconnects_total exported")
}

#[tokio::test]
async fn a_lost_listen_connection_is_counted() {
    let app = TestApp::spawn().await;
    assert_eq!(listen_reconnects(&app).await, 0);
    let admin = app.sql().await;
    admin.batch_execute("RESET ROLE").await.unwrap();
    // The listener's backend is the one whose last statement was its LISTEN.
    let mut terminated = 0;
    for _ in 0..100 {
        terminated = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                  WHERE datname = current_database() AND query LIKE 'LISTEN %'",
                &[],
            )
            .await
            .unwrap()
            .try_get::<_, i64>(0)
            .unwrap();
        if terminated > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(terminated, 1, "the LISTEN connection was found");
    for _ in 0..100 {
        if listen_reconnects(&app).await == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("synchub_listen_reconnects_total did not count the lost connection");
}
