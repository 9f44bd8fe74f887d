//! The dev server (`-- COMMAND ARGS...`): started after the first hydration, sent the
//! SIGTERM/SIGINT the agent receives, and its exit status becomes the agent's.

use std::process::ExitStatus;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use tokio::process::{Child, Command};

pub struct DevServer {
    child: Child,
}

impl DevServer {
    pub fn start(argv: &[String], project_dir: &std::path::Path) -> std::io::Result<Self> {
        let (program, args) = argv.split_first().ok_or_else(|| std::io::Error::other("empty command"))?;
        let child = Command::new(program)
            .args(args)
            .current_dir(project_dir)
            // The container token is for the agent only.
            .env_remove("REALTIME_TOKEN")
            .kill_on_drop(true)
            .spawn()?;
        tracing::info!(program = %program, pid = child.id(), "dev server started");
        Ok(Self { child })
    }

    /// Sends `signal` to the dev server (ignored once it has exited).
    pub fn signal(&self, signal: Signal) {
        let Some(pid) = self.child.id().and_then(|id| Pid::from_raw(id as i32)) else { return };
        if let Err(error) = kill_process(pid, signal) {
            tracing::warn!(%error, "forwarding a signal to the dev server failed");
        }
    }

    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        self.signal(Signal::TERM);
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// The shell convention: the exit code, or 128 + the signal that ended the process.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
