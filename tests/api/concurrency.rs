//! Races decided by the database: parallel writers on one version, parallel quota use.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn sixteen_writers_on_one_expected_version_exactly_one_wins() {
    let app = TestApp::spawn_with(|c| c.db_pool_size = 16).await;
    let project = app.create_project("alice", "race").await;
    app.write("alice", &project, "shared.ts", "v1").await;
    let token = app.user_token("alice");
    let writers = (0..16).map(|i| {
        let (app, token, project) = (&app, token.clone(), project.clone());
        async move {
            app.put(
                &format!("/v1/projects/{project}/files/shared.ts"),
                &token,
                json!({"content": format!("writer {i}"), "expected_version": 1}),
            )
            .await
        }
    });
    let answers = futures_util::future::join_all(writers).await;
    let wins = answers.iter().filter(|a| a.0 == StatusCode::OK).count();
    let conflicts = answers.iter().filter(|a| a.0 == StatusCode::CONFLICT).count();
    assert_eq!((wins, conflicts), (1, 15), "{answers:?}");
    for (_, body) in answers.iter().filter(|a| a.0 == StatusCode::CONFLICT) {
        assert_eq!(body["error"]["code"], "version_conflict");
        assert_eq!(body["error"]["current_version"], 2);
    }
    let (_, file) = app.get(&format!("/v1/projects/{project}/files/shared.ts"), &token).await;
    assert_eq!(file["version"], 2);
}

#[tokio::test]
async fn parallel_uploads_cannot_overshoot_the_byte_quota() {
    let app = TestApp::spawn_with(|c| {
        c.limits.max_bytes_per_user = 1000;
        c.db_pool_size = 16;
    })
    .await;
    let p1 = app.create_project("alice", "one").await;
    let p2 = app.create_project("alice", "two").await;
    let token = app.user_token("alice");
    // 20 uploads of 100 bytes over two projects of one owner: at most 10 fit.
    let uploads = (0..20).map(|i| {
        let (app, token) = (&app, token.clone());
        let project = if i % 2 == 0 { p1.clone() } else { p2.clone() };
        async move {
            app.put(&format!("/v1/projects/{project}/files/f{i}.txt"), &token, json!({"content": "x".repeat(100)}))
                .await
        }
    });
    let answers = futures_util::future::join_all(uploads).await;
    let ok = answers.iter().filter(|a| a.0 == StatusCode::OK).count();
    assert_eq!(ok, 10, "{answers:?}");
    assert!(answers.iter().all(|a| a.0 == StatusCode::OK || a.1["error"]["code"] == "quota_exceeded"), "{answers:?}");
    let (_, a) = app.get(&format!("/v1/projects/{p1}"), &token).await;
    let (_, b) = app.get(&format!("/v1/projects/{p2}"), &token).await;
    assert_eq!(a["bytes"].as_i64().unwrap() + b["bytes"].as_i64().unwrap(), 1000);
}
