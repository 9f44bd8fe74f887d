//! `synchub dev` and `synchub token` as a newcomer runs them: the built binary, from any
//! directory, relocating its cluster when the postgres user cannot reach it.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

const SYNCHUB: &str = env!("CARGO_BIN_EXE_synchub");

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// `synchub` with no configuration inherited from the environment running the tests.
fn synchub(cwd: &Path) -> Command {
    let mut command = Command::new(SYNCHUB);
    command.current_dir(cwd).env("RUST_LOG", "warn");
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("SYNCHUB_") || name == "DATABASE_URL" || name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command
}

/// Stops the dev hub (SIGTERM, then SIGKILL) when the test ends, pass or fail, then
/// removes a cluster it placed outside the test's temp dir.
struct DevHub {
    child: Child,
    relocated_cluster: Option<PathBuf>,
}

impl Drop for DevHub {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(cluster) = self.relocated_cluster.take() {
            let _ = std::fs::remove_dir_all(cluster);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn dev_works_from_a_directory_postgres_cannot_reach_and_token_finds_its_keys() {
    // As root, a 0700 root-owned directory (like /root) the postgres user cannot enter.
    let outer = tempfile::Builder::new().prefix("synchub-devtest-").tempdir().unwrap();
    std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let checkout = outer.path().join("checkout");
    std::fs::create_dir(&checkout).unwrap();
    let data_dir = checkout.join("hub-data");
    let port = free_port();

    let mut child = synchub(&checkout)
        .args(["dev", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut hub = DevHub { child, relocated_cluster: None };
    // Read the banner on a thread (bounded by the hub's exit or the banner's last line).
    let banner = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok).take(200) {
            let done = line.contains("More tokens:");
            lines.push(line);
            if done {
                break;
            }
        }
        lines.join("\n")
    });
    let base = format!("http://127.0.0.1:{port}");
    synchub::app::init_process();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = http.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "synchub dev did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let banner = tokio::task::spawn_blocking(move || banner.join().unwrap()).await.unwrap();
    assert!(banner.contains("synchub dev is ready"), "{banner}");

    if is_root() {
        // The cluster moved where the postgres user can reach it, and the hub said where.
        let line = banner.lines().find(|l| l.contains("the PostgreSQL cluster lives in")).expect(&banner);
        let cluster = PathBuf::from(line.split(" lives in ").nth(1).unwrap().split(" (private").next().unwrap());
        let meta = std::fs::metadata(&cluster).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{}", cluster.display());
        let postgres_uid = Command::new("id").args(["-u", "postgres"]).output().unwrap();
        assert_eq!(meta.uid().to_string(), String::from_utf8_lossy(&postgres_uid.stdout).trim());
        assert!(cluster.join("data/PG_VERSION").exists());
        hub.relocated_cluster = Some(cluster);
    }

    // A token minted from another directory with --data-dir is accepted by the hub.
    let output =
        synchub(Path::new("/")).args(["token", "user", "--sub", "x", "--data-dir"]).arg(&data_dir).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    // …and so is one minted from the directory dev ran in with --data-dir pointing there.
    let relative = synchub(&checkout).args(["token", "user", "--sub", "x", "--data-dir", "hub-data"]).output().unwrap();
    assert!(relative.status.success(), "{}", String::from_utf8_lossy(&relative.stderr));
    for token in [token, String::from_utf8(relative.stdout).unwrap().trim().to_string()] {
        let created = http
            .post(format!("{base}/v1/projects"))
            .bearer_auth(&token)
            .json(&json!({"name": "from the dev binary"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
    }

    // The dev hub allows local dev servers' origins by default.
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{base}/v1/projects"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.headers().get("access-control-allow-origin").unwrap(), "http://localhost:5173");

    // Its PostgreSQL refuses a login without the password.
    let pg_port: u16 = banner
        .lines()
        .find_map(|l| l.split("(port ").nth(1))
        .and_then(|rest| rest.trim_end_matches(')').parse().ok())
        .expect(&banner);
    let refused =
        tokio_postgres::connect(&format!("postgres://postgres@127.0.0.1:{pg_port}/synchub"), tokio_postgres::NoTls)
            .await;
    assert!(refused.is_err(), "a login without the password was accepted");
    let password = data_dir.join("pg/password");
    assert_eq!(std::fs::metadata(&password).unwrap().permissions().mode() & 0o777, 0o600);
}
