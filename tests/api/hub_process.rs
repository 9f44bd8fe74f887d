//! The real `synchub serve` binary as a child process (for what only a process shows:
//! its log output, a SIGKILL or SIGTERM, environment-only configuration). Its own module:
//! the agent's tests include `helpers.rs`, and `CARGO_BIN_EXE_synchub` exists only here.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::{JWT_SECRET, SIGNING_KEY};

/// The real `synchub serve` binary, on one database that several may share.
pub struct HubProcess {
    child: Child,
    pub addr: std::net::SocketAddr,
    /// What the hub wrote to stderr (its log), when started with [`HubProcess::start_logging`].
    log: Option<(Arc<Mutex<String>>, std::thread::JoinHandle<()>)>,
}

impl HubProcess {
    /// Quiet (`RUST_LOG=warn`, output discarded).
    pub async fn start(database_url: &str) -> HubProcess {
        Self::start_with(database_url, |command| {
            command.env("RUST_LOG", "warn").stderr(Stdio::null());
        })
        .await
    }

    /// At the default log level, in JSON, its log captured (see [`HubProcess::log`]).
    pub async fn start_logging(database_url: &str, adjust: impl FnOnce(&mut Command)) -> HubProcess {
        Self::start_with(database_url, |command| {
            command.env_remove("RUST_LOG").env("SYNCHUB_LOG_FORMAT", "json").stderr(Stdio::piped());
            adjust(command);
        })
        .await
    }

    /// Quiet, on `addr` (a hub restarted where its clients expect it).
    pub async fn start_on(database_url: &str, addr: std::net::SocketAddr) -> HubProcess {
        Self::spawn(database_url, addr, |command| {
            command.env("RUST_LOG", "warn").stderr(Stdio::null());
        })
        .await
    }

    pub async fn start_with(database_url: &str, adjust: impl FnOnce(&mut Command)) -> HubProcess {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        Self::spawn(database_url, addr, adjust).await
    }

    async fn spawn(database_url: &str, addr: std::net::SocketAddr, adjust: impl FnOnce(&mut Command)) -> HubProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_synchub"));
        command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("SYNCHUB_LISTEN", addr.to_string())
            .env("SYNCHUB_JWT_SECRET", JWT_SECRET)
            .env("SYNCHUB_SIGNING_KEY", SIGNING_KEY)
            .env("SYNCHUB_WRITE_RATE", "100000")
            .env("SYNCHUB_WRITE_BURST", "100000")
            .stdout(Stdio::null());
        adjust(&mut command);
        let mut child = command.spawn().expect("start synchub serve");
        // Drained on a thread, so a full pipe never blocks the hub.
        let log = child.stderr.take().map(|mut stderr| {
            let text = Arc::new(Mutex::new(String::new()));
            let sink = text.clone();
            let drain = std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n @ 1..) = stderr.read(&mut buf) {
                    sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            (text, drain)
        });
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http.get(format!("http://{addr}/healthz")).send().await.is_ok() {
                return HubProcess { child, addr, log };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("synchub serve did not come up on {addr}");
    }

    /// Sends SIGTERM (what an orchestrator sends before a restart).
    pub fn terminate(&self) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM failed");
    }

    /// Waits (polling, at most `within`) for the process to exit; its status, or None if
    /// it was still running (it is then killed).
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// Stops the hub (SIGKILL) and returns everything it logged.
    pub fn stop_and_read_log(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (text, drain) = self.log.take().expect("started with start_logging");
        let _ = drain.join();
        text.lock().unwrap().clone()
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
