//! The `snapshot-builder build` CLI against a real database: the archive it builds for a
//! cursor the hub has snapshotted is the hub's archive, byte for byte; at a newer cursor it
//! holds the current files; an unknown project fails clearly.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::json;

use crate::helpers::TestApp;

/// The CLI binary, built (or found up to date) once per test process, in this target dir.
fn cli_binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "snapshot-builder", "--bin", "snapshot-builder"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build for snapshot-builder");
        assert!(status.success(), "building the snapshot-builder binary failed");
        // target/<profile>/deps/api-<hash> → target/<profile>/snapshot-builder
        let exe = std::env::current_exe().unwrap();
        let binary = exe.parent().and_then(|deps| deps.parent()).unwrap().join("snapshot-builder");
        assert!(binary.is_file(), "no binary at {}", binary.display());
        binary
    })
}

async fn run_cli(args: Vec<String>) -> Output {
    let binary = cli_binary().clone();
    tokio::task::spawn_blocking(move || Command::new(binary).args(args).env_remove("DATABASE_URL").output().unwrap())
        .await
        .unwrap()
}

/// `snapshot-builder build --database-url <the test database> --project <project> --out <out>`.
pub(crate) async fn build(app: &TestApp, project: &str, out: &str) -> Output {
    run_cli(
        ["build", "--database-url", &app.database_url, "--project", project, "--out", out].map(String::from).to_vec(),
    )
    .await
}

#[tokio::test]
async fn the_cli_builds_the_hubs_archive_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("objects");
    let app = TestApp::spawn_with(move |c| c.storage_dir = Some(storage)).await;
    let p = app.create_project("alice", "cli").await;
    app.write("alice", &p, "index.html", "<h1>hi</h1>").await;
    app.write("alice", &p, "src/app.ts", "export const x = 1;\n").await;
    app.write("alice", &p, "src/ünï.md", "# ü\n").await;
    let service = app.service_token();
    let (status, snapshot) = app.post(&format!("/v1/projects/{p}/snapshots"), &service, json!({})).await;
    assert_eq!(status.as_u16(), 201, "{snapshot}");
    let served = app.http.get(snapshot["url"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();

    let out = dir.path().join("cli.zip");
    let output = build(&app, &p, &out.display().to_string()).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let built = std::fs::read(&out).unwrap();
    assert!(built == served.as_ref(), "the CLI's archive differs from the hub's");

    // To stdout, at a newer cursor: the current files, a new snapshot id.
    app.write("alice", &p, "src/app.ts", "export const x = 2;\n").await;
    let output = build(&app, &p, "-").await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let target = dir.path().join("tree");
    std::fs::create_dir(&target).unwrap();
    let manifest = snapshot_builder::extract(
        std::io::Cursor::new(output.stdout),
        &target,
        &snapshot_builder::ReadLimits::default(),
    )
    .unwrap();
    assert_eq!(manifest.cursor, snapshot["cursor"].as_i64().unwrap() + 1);
    assert_ne!(manifest.snapshot_id, snapshot["snapshot_id"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(target.join("src/app.ts")).unwrap(), "export const x = 2;\n");
    assert_eq!(manifest.files.len(), 3);
}

#[tokio::test]
async fn the_cli_fails_clearly_on_an_unknown_project() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("none.zip");
    let project = uuid::Uuid::new_v4().to_string();
    let output = build(&app, &project, &out.display().to_string()).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("project {project} not found")), "{stderr}");
    assert!(!out.exists());
}
