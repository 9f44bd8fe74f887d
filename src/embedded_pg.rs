//! A private PostgreSQL cluster started from the machine's binaries, for `synchub dev`
//! and the test harness. When run as root it runs PostgreSQL as the `postgres` user
//! (initdb refuses root). The server dies with the process that started it
//! (PR_SET_PDEATHSIG), so a crashed test run leaves no server behind. It listens on
//! loopback only and asks for a password (scram-sha-256) generated at initdb and kept in
//! `root/password` (mode 0600): another local user cannot connect as its superuser.

use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How the server trades durability for speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Default PostgreSQL settings (`synchub dev`).
    Full,
    /// fsync off: for throwaway test clusters only.
    Throwaway,
}

pub struct EmbeddedPostgres {
    pub port: u16,
    root: PathBuf,
    /// None only for a cluster an older version initialized with `trust`.
    password: Option<String>,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
}

impl EmbeddedPostgres {
    /// Initializes `root/data` if needed and starts a server on a free loopback port.
    pub fn start(root: &Path, durability: Durability) -> anyhow::Result<Self> {
        let bin = find_bin_dir()?;
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let root = root.canonicalize()?;
        let owner = server_owner()?;
        if let Some((uid, gid)) = owner {
            chown(&root, uid, gid)?;
            // The postgres user must be able to reach the directory.
            let mut dir = root.parent();
            while let Some(d) = dir {
                if let Ok(meta) = std::fs::metadata(d)
                    && meta.permissions().mode() & 0o001 == 0
                {
                    bail!("{} is not searchable by the postgres user; use another --data-dir", d.display());
                }
                dir = d.parent();
            }
        }
        let data = root.join("data");
        let password_file = root.join("password");
        let password = if data.join("PG_VERSION").exists() {
            match std::fs::read_to_string(&password_file) {
                Ok(password) => Some(password.trim().to_string()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(dir = %data.display(), "this PostgreSQL cluster was initialized without a password (trust); remove it to get one that asks for a password");
                    None
                }
                Err(err) => return Err(err).with_context(|| format!("reading {}", password_file.display())),
            }
        } else {
            let password = hex::encode(rand::random::<[u8; 24]>());
            write_private(&password_file, &password, None)?;
            // initdb reads the password from a file it (the postgres user) can read; removed
            // again right after.
            let initdb_file = root.join("initdb-password");
            write_private(&initdb_file, &password, owner)?;
            let status = run_as(owner, Command::new(bin.join("initdb")))
                .args(["-D"])
                .arg(&data)
                .args(["-U", "postgres", "-A", "scram-sha-256", "--pwfile"])
                .arg(&initdb_file)
                .args(["-E", "UTF8", "--locale=C", "--no-sync"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .context("running initdb");
            let _ = std::fs::remove_file(&initdb_file);
            let status = status?;
            if !status.status.success() {
                bail!("initdb failed: {}", String::from_utf8_lossy(&status.stderr));
            }
            Some(password)
        };
        let server = EmbeddedPostgres { port: 0, root, password, bin, owner };
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            match server.spawn(port, durability) {
                Ok(()) => return Ok(EmbeddedPostgres { port, ..server }),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("PostgreSQL did not start")))
    }

    fn spawn(&self, port: u16, durability: Durability) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.root.join("postgres.log"))?;
        if let Some((uid, gid)) = self.owner {
            chown(&self.root.join("postgres.log"), uid, gid)?;
        }
        let mut command = run_as(self.owner, Command::new(self.bin.join("postgres")));
        command
            .arg("-D")
            .arg(self.root.join("data"))
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="])
            .args(["-c", "max_connections=400", "-c", "shared_buffers=128MB"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if durability == Durability::Throwaway {
            command.args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]);
        }
        die_with_parent(&mut command);
        // The thread that spawns the server must outlive it (PDEATHSIG fires when the
        // spawning thread exits), so a dedicated thread spawns it and then waits on it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new().name(format!("postgres-{port}")).spawn(move || match command.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(()));
                let _ = child.wait();
            }
            Err(err) => {
                let _ = tx.send(Err(err));
            }
        })?;
        rx.recv()?.context("starting postgres")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-t", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "PostgreSQL on port {port} did not become ready; see {}",
                    self.root.join("postgres.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A connection string for `database` as the superuser (with its password).
    pub fn url(&self, database: &str) -> String {
        match &self.password {
            Some(password) => format!("postgres://postgres:{password}@127.0.0.1:{}/{database}", self.port),
            None => format!("postgres://postgres@127.0.0.1:{}/{database}", self.port),
        }
    }

    /// Fast shutdown (clients disconnected, no recovery needed at next start).
    pub fn stop(&self) {
        let _ = run_as(self.owner, Command::new(self.bin.join("pg_ctl")))
            .arg("-D")
            .arg(self.root.join("data"))
            .args(["-m", "fast", "-w", "-t", "20", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Immediate shutdown, like a crash (tests of recovery).
    pub fn kill(&self) {
        let _ = run_as(self.owner, Command::new(self.bin.join("pg_ctl")))
            .arg("-D")
            .arg(self.root.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Starts the server again on the same port (after [`stop`](Self::stop) or [`kill`](Self::kill)).
    pub fn restart(&self, durability: Durability) -> anyhow::Result<()> {
        self.spawn(self.port, durability)
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }
}

/// `SYNCHUB_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else `pg_config --bindir`.
pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("SYNCHUB_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    candidates.sort();
    if let Some((_, bin)) = candidates.pop() {
        return Ok(bin);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    bail!("PostgreSQL server binaries not found (install postgresql, or set SYNCHUB_PG_BIN)")
}

/// PostgreSQL refuses to run as root: as root, run it as the `postgres` user.
fn server_owner() -> anyhow::Result<Option<(u32, u32)>> {
    if current_uid() != 0 {
        return Ok(None);
    }
    let out = Command::new("id").args(["-u", "postgres"]).output()?;
    let gid = Command::new("id").args(["-g", "postgres"]).output()?;
    if !out.status.success() || !gid.status.success() {
        bail!("running as root needs a 'postgres' user to run PostgreSQL as (useradd --system postgres)");
    }
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    let gid = String::from_utf8_lossy(&gid.stdout).trim().parse()?;
    Ok(Some((uid, gid)))
}

fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX)
}

fn run_as(owner: Option<(u32, u32)>, mut command: Command) -> Command {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command
}

/// Writes a secret readable by its owner only (`owner`, or the current user).
fn write_private(path: &Path, secret: &str, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    if let Some((uid, gid)) = owner {
        chown(path, uid, gid)?;
    }
    Ok(())
}

fn chown(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).with_context(|| format!("chown {}", path.display()))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Asks the kernel to send SIGQUIT (PostgreSQL's immediate shutdown) to the server when
/// the thread that spawned it dies, i.e. when this process exits.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
    // which is async-signal-safe; it allocates nothing and touches no shared state.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
