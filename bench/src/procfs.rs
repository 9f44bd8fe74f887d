//! Reading /proc: a process's memory and CPU time, and what the machine is.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;

/// A `Name: N kB` field of /proc/PID/status, in KiB.
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    status_field(pid, field)?.split_whitespace().next().context("empty field")?.parse().context("not a number")
}

/// The text of a field of /proc/PID/status.
pub fn status_field(pid: u32, field: &str) -> anyhow::Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':').map(|v| v.trim().to_string()))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// CPU time a process has used, split as the kernel accounts it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// utime: the process's own code.
    pub user: Duration,
    /// stime: system calls (on loopback this includes the receiving side's TCP work).
    pub system: Duration,
}

impl Cpu {
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// The CPU used between `earlier` and this reading.
    pub fn since(&self, earlier: Cpu) -> Cpu {
        Cpu { user: self.user.saturating_sub(earlier.user), system: self.system.saturating_sub(earlier.system) }
    }
}

/// The CPU of several processes together.
impl std::iter::Sum for Cpu {
    fn sum<I: Iterator<Item = Cpu>>(readings: I) -> Cpu {
        readings
            .fold(Cpu::default(), |total, cpu| Cpu { user: total.user + cpu.user, system: total.system + cpu.system })
    }
}

/// utime and stime of a process (/proc/PID/stat fields 14 and 15).
pub fn cpu_time(pid: u32) -> anyhow::Result<Cpu> {
    cpu_time_of(&format!("/proc/{pid}/stat"))
}

/// utime and stime of this process.
pub fn self_cpu_time() -> anyhow::Result<Cpu> {
    cpu_time_of("/proc/self/stat")
}

fn cpu_time_of(path: &str) -> anyhow::Result<Cpu> {
    let stat = std::fs::read_to_string(path)?;
    // The command name (field 2) may contain spaces; fields after it start at field 3.
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    let ticks = clock_ticks() as f64;
    Ok(Cpu {
        user: Duration::from_secs_f64(utime as f64 / ticks),
        system: Duration::from_secs_f64(stime as f64 / ticks),
    })
}

/// USER_HZ (`getconf CLK_TCK`; 100 on every Linux we know of).
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|dir| dir.count())
}

/// The soft RLIMIT_NOFILE of this process (inherited by the hub it starts).
pub fn nofile_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The hard RLIMIT_NOFILE of this process.
pub fn nofile_hard_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(4)?.parse().ok()
}

/// The 1-minute load average.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// One line describing the machine: CPUs, CPU model, memory, kernel.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "? GiB".into());
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|k| k.trim().to_string()).unwrap_or_default();
    format!("{cpus} CPUs (nproc), {model}, {memory} RAM, Linux {kernel}")
}

/// The parent of a process (/proc/PID/stat field 4).
pub fn parent_pid(pid: u32) -> anyhow::Result<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 1..];
    Ok(rest.split_whitespace().nth(1).context("no ppid")?.parse()?)
}

/// `pid` and its direct children (e.g. a PostgreSQL postmaster and its backends).
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
            if parent_pid(child).is_ok_and(|parent| parent == pid) {
                pids.push(child);
            }
        }
    }
    pids
}

/// The whole machine's CPU time since boot from /proc/stat: (busy, all), in clock ticks.
pub fn machine_ticks() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().filter(|l| l.starts_with("cpu ")).context("no cpu line in /proc/stat")?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let all: u64 = ticks.iter().take(8).sum();
    // idle and iowait are the not-busy fields.
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok((all.saturating_sub(idle), all))
}
