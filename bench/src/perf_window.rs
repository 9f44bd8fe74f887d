//! Profiles of exactly what a scenario measures. With `SYNCHUB_BENCH_PERF_CONTROL=CTL,ACK`,
//! the two FIFOs of a `perf record --control fifo:CTL,ACK --delay=-1` started before the
//! bench (events disabled at start), the bench enables perf's events only for the windows
//! whose CPU time it reports (fan-out's paced phases, sockets_100k's events) and disables
//! them after: the profile then explains those figures, not the set-up, warm-ups and bursts
//! around them. `scripts/profile` runs the bench that way and says where each process's CPU
//! went. Without the variable, a window does nothing.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, bail};

/// perf's control FIFO and its answers.
struct Control {
    commands: File,
    acks: BufReader<File>,
}

impl Control {
    fn open() -> anyhow::Result<Option<Control>> {
        let Ok(value) = std::env::var("SYNCHUB_BENCH_PERF_CONTROL") else { return Ok(None) };
        let (ctl, ack) = value.split_once(',').context("SYNCHUB_BENCH_PERF_CONTROL is not CTL,ACK")?;
        // perf holds both FIFOs open while it records, so neither open blocks.
        let commands = OpenOptions::new().write(true).open(ctl).with_context(|| format!("opening {ctl}"))?;
        let acks = BufReader::new(File::open(ack).with_context(|| format!("opening {ack}"))?);
        Ok(Some(Control { commands, acks }))
    }

    /// Sends `command` ("enable" or "disable") and waits for perf's "ack".
    fn send(&mut self, command: &str) -> anyhow::Result<()> {
        self.commands.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = Vec::new();
        loop {
            answer.clear();
            if self.acks.read_until(b'\n', &mut answer)? == 0 {
                bail!("perf closed its ack FIFO");
            }
            // perf ends its "ack\n" with a NUL, which starts the next read.
            if answer.iter().filter(|&&b| b != 0).eq(b"ack\n".iter()) {
                return Ok(());
            }
        }
    }
}

fn control() -> anyhow::Result<Option<&'static Mutex<Control>>> {
    static CONTROL: OnceLock<Option<Mutex<Control>>> = OnceLock::new();
    if let Some(control) = CONTROL.get() {
        return Ok(control.as_ref());
    }
    let opened = Control::open()?.map(Mutex::new);
    Ok(CONTROL.get_or_init(|| opened).as_ref())
}

/// While alive, perf records (when the bench runs under `perf record --control`).
pub struct Window(Option<&'static Mutex<Control>>);

/// Opens a window: perf's events are on until it is dropped.
pub fn open() -> anyhow::Result<Window> {
    let control = control()?;
    if let Some(control) = control {
        control.lock().unwrap_or_else(|p| p.into_inner()).send("enable").context("enabling perf")?;
    }
    Ok(Window(control))
}

impl Drop for Window {
    fn drop(&mut self) {
        if let Some(control) = self.0
            && let Err(err) = control.lock().unwrap_or_else(|p| p.into_inner()).send("disable")
        {
            eprintln!("perf window: {err:#}");
        }
    }
}
