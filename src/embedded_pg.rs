//! A private PostgreSQL cluster started from the machine's binaries, for `synchub dev`
//! and the test harness. When run as root it runs PostgreSQL as the `postgres` user
//! (initdb refuses root); if that user cannot reach the requested directory (a checkout
//! under `/root`), the cluster lives in a private directory under `/var/tmp` instead. The
//! server dies with the process that started it (PR_SET_PDEATHSIG), so a crashed test run
//! leaves no server behind.
//!
//! Authentication is always a password (scram-sha-256), never `trust`: the generated
//! secret is kept in `root/password`, readable only by the process's own user.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use sha2::{Digest, Sha256};

/// How the server trades durability for speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Default PostgreSQL settings (`synchub dev`).
    Full,
    /// fsync off: for throwaway test clusters only.
    Throwaway,
}

/// Every connection authenticates with the password; written at each start so a cluster
/// made by an older version (initdb -A trust) is closed too.
const PG_HBA: &str = "# Written by synchub: password (scram-sha-256) only, never trust.
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
";

pub struct EmbeddedPostgres {
    pub port: u16,
    /// Where the cluster (`data/`, `postgres.log`) lives: the requested directory, or a
    /// private directory the `postgres` user can reach (see [`relocated`](Self::relocated)).
    cluster: PathBuf,
    /// The requested directory, when the cluster had to live elsewhere.
    relocated: bool,
    password: String,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
}

impl EmbeddedPostgres {
    /// Initializes the cluster if needed and starts a server on a free loopback port.
    /// `root` keeps the password; the cluster lives there too unless the `postgres` user
    /// cannot reach it.
    pub fn start(root: &Path, durability: Durability) -> anyhow::Result<Self> {
        let bin = find_bin_dir()?;
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        let root = root.canonicalize()?;
        let owner = server_owner()?;
        let (cluster, relocated) = match owner {
            Some((uid, gid)) if !reachable_by(&root, uid, gid)? => (private_cluster_dir(&root, uid, gid)?, true),
            Some((uid, gid)) => {
                chown(&root, uid, gid)?;
                (root.clone(), false)
            }
            None => (root.clone(), false),
        };
        let password_file = root.join("password");
        let data = cluster.join("data");
        let password = match std::fs::read_to_string(&password_file) {
            Ok(password) => password.trim().to_string(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let password = generate_password();
                write_private(&password_file, &password)?;
                if data.join("PG_VERSION").exists() {
                    // A cluster from before passwords: give its superuser this one.
                    set_password_single_user(&bin, owner, &data, &password)?;
                }
                password
            }
            Err(err) => return Err(err).with_context(|| format!("reading {}", password_file.display())),
        };
        if !data.join("PG_VERSION").exists() {
            initdb(&bin, owner, &cluster, &data, &password)?;
        }
        let hba = data.join("pg_hba.conf");
        std::fs::write(&hba, PG_HBA).with_context(|| format!("writing {}", hba.display()))?;
        if let Some((uid, gid)) = owner {
            chown(&hba, uid, gid)?;
        }
        let server = EmbeddedPostgres { port: 0, cluster, relocated, password, bin, owner };
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

    /// Where the cluster's files are.
    pub fn cluster_dir(&self) -> &Path {
        &self.cluster
    }

    /// True when the cluster lives outside the requested directory (the `postgres` user
    /// could not reach it).
    pub fn relocated(&self) -> bool {
        self.relocated
    }

    /// The superuser's password (for tools such as pgbench: `PGPASSWORD`).
    pub fn password(&self) -> &str {
        &self.password
    }

    fn spawn(&self, port: u16, durability: Durability) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.cluster.join("postgres.log"))?;
        if let Some((uid, gid)) = self.owner {
            chown(&self.cluster.join("postgres.log"), uid, gid)?;
        }
        let mut command = run_as(self.owner, Command::new(self.bin.join("postgres")));
        command
            .arg("-D")
            .arg(self.cluster.join("data"))
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
                    self.cluster.join("postgres.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A connection string for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres:{}@127.0.0.1:{}/{database}", self.password, self.port)
    }

    /// Fast shutdown (clients disconnected, no recovery needed at next start).
    pub fn stop(&self) {
        let _ = run_as(self.owner, Command::new(self.bin.join("pg_ctl")))
            .arg("-D")
            .arg(self.cluster.join("data"))
            .args(["-m", "fast", "-w", "-t", "20", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Immediate shutdown, like a crash (tests of recovery).
    pub fn kill(&self) {
        let _ = run_as(self.owner, Command::new(self.bin.join("pg_ctl")))
            .arg("-D")
            .arg(self.cluster.join("data"))
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
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX)
}

fn run_as(owner: Option<(u32, u32)>, mut command: Command) -> Command {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command
}

fn chown(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).with_context(|| format!("chown {}", path.display()))
}

/// Whether `uid` can enter and write `dir`, asked of the kernel (every ancestor counts).
fn reachable_by(dir: &Path, uid: u32, gid: u32) -> anyhow::Result<bool> {
    let status = run_as(Some((uid, gid)), Command::new("test"))
        .arg("-x")
        .arg(dir.parent().unwrap_or(dir))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running test(1) as the postgres user")?;
    Ok(status.success())
}

/// A directory the `postgres` user can reach, private to it (0700) and named after the
/// requested one, so the same data dir finds its cluster again. It sits in a directory
/// anyone may write to, so an existing one is used only if it is a real directory that
/// `postgres` owns with mode 0700.
fn private_cluster_dir(requested: &Path, uid: u32, gid: u32) -> anyhow::Result<PathBuf> {
    let digest = Sha256::digest(requested.as_os_str().as_encoded_bytes());
    let name = format!("synchub-pg-{}", hex::encode(&digest[..8]));
    let base = ["/var/tmp", "/tmp"]
        .into_iter()
        .map(PathBuf::from)
        .find(|base| base.is_dir())
        .context("neither /var/tmp nor /tmp exists")?;
    let dir = base.join(name);
    match std::fs::create_dir(&dir) {
        Ok(()) => {
            chown(&dir, uid, gid)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(&dir)?;
            if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o777 != 0o700 {
                bail!("{} exists but is not a directory private to the postgres user; remove it", dir.display());
            }
        }
        Err(err) => return Err(err).with_context(|| format!("creating {}", dir.display())),
    }
    Ok(dir)
}

fn generate_password() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Creates (or replaces) `path` with mode 0600 from the start: never briefly readable by others.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// initdb with password authentication: the password reaches it through a file only the
/// server's user can read, removed right after.
fn initdb(bin: &Path, owner: Option<(u32, u32)>, cluster: &Path, data: &Path, password: &str) -> anyhow::Result<()> {
    let pwfile = cluster.join("initdb-password");
    write_private(&pwfile, password)?;
    if let Some((uid, gid)) = owner {
        chown(&pwfile, uid, gid)?;
    }
    let output = run_as(owner, Command::new(bin.join("initdb")))
        .arg("-D")
        .arg(data)
        .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running initdb");
    let _ = std::fs::remove_file(&pwfile);
    let output = output?;
    if !output.status.success() {
        bail!("initdb failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// Sets the superuser's password of a stopped cluster (single-user mode needs no login).
fn set_password_single_user(bin: &Path, owner: Option<(u32, u32)>, data: &Path, password: &str) -> anyhow::Result<()> {
    let mut child = run_as(owner, Command::new(bin.join("postgres")))
        .arg("--single")
        .arg("-D")
        .arg(data)
        .args(["-c", "password_encryption=scram-sha-256", "postgres"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting postgres --single")?;
    // The password is URL-safe base64: no quote can end the literal.
    let statement = format!("ALTER ROLE postgres PASSWORD '{password}';\n");
    child.stdin.take().context("stdin")?.write_all(statement.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("setting the PostgreSQL password failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
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
