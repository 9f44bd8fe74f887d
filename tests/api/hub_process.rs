//! The real `synchub serve` binary as a child process (its own module: the agent's tests
//! include `helpers.rs`, and `CARGO_BIN_EXE_synchub` exists only for this crate's tests).

use crate::helpers::{JWT_SECRET, SIGNING_KEY};

/// The real `synchub serve` binary, on one database that several may share.
pub struct HubProcess {
    child: std::process::Child,
    pub addr: std::net::SocketAddr,
}

impl HubProcess {
    /// On a free port.
    pub async fn start(database_url: &str) -> HubProcess {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        Self::start_on(database_url, addr).await
    }

    /// On `addr` (a hub restarted where its clients expect it).
    pub async fn start_on(database_url: &str, addr: std::net::SocketAddr) -> HubProcess {
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_synchub"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("SYNCHUB_LISTEN", addr.to_string())
            .env("SYNCHUB_JWT_SECRET", JWT_SECRET)
            .env("SYNCHUB_SIGNING_KEY", SIGNING_KEY)
            .env("SYNCHUB_WRITE_RATE", "100000")
            .env("SYNCHUB_WRITE_BURST", "100000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start synchub serve");
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http.get(format!("http://{addr}/healthz")).send().await.is_ok() {
                return HubProcess { child, addr };
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("synchub serve did not come up on {addr}");
    }

    /// Sends SIGTERM (what an orchestrator sends before a restart).
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM failed");
    }

    /// Waits (polling, at most `within`) for the process to exit; its status, or None if
    /// it was still running (it is then killed).
    pub async fn wait_exit(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
