//! Watching the agent's tree: inotify IN_MOVED_TO (the agent writes a temp file next to the
//! target, then renames it into place), on a blocking thread.

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use rustix::fs::inotify;

use crate::harness::clock;

pub(super) struct DirWatch {
    /// Per file index (`<index>.txt`): when it was last renamed into place (clock ns; 0 = not yet).
    arrivals: Arc<Vec<AtomicU64>>,
    /// Per file index: how many times it was renamed into place (the agent's writes of it).
    renames: Arc<Vec<AtomicU64>>,
    fd: Arc<OwnedFd>,
    wd: i32,
}

impl DirWatch {
    pub(super) fn start(dir: &Path, files: usize) -> anyhow::Result<DirWatch> {
        let fd = Arc::new(inotify::init(inotify::CreateFlags::CLOEXEC)?);
        let wd = inotify::add_watch(&*fd, dir, inotify::WatchFlags::MOVED_TO)
            .with_context(|| format!("inotify on {}", dir.display()))?;
        let arrivals: Arc<Vec<AtomicU64>> = Arc::new((0..files).map(|_| AtomicU64::new(0)).collect());
        let renames: Arc<Vec<AtomicU64>> = Arc::new((0..files).map(|_| AtomicU64::new(0)).collect());
        let (reader_fd, slots, counts) = (fd.clone(), arrivals.clone(), renames.clone());
        std::thread::Builder::new().name("bench-inotify".into()).spawn(move || {
            let mut buffer = vec![MaybeUninit::<u8>::uninit(); 256 * 1024];
            let mut reader = inotify::Reader::new(&*reader_fd, &mut buffer);
            loop {
                let Ok(event) = reader.next() else { return };
                let now = clock().now_ns();
                if event.events().contains(inotify::ReadFlags::IGNORED) {
                    return; // the watch was removed: done
                }
                let index = event
                    .file_name()
                    .and_then(|name| name.to_str().ok())
                    .and_then(|name| name.strip_suffix(".txt")?.parse::<usize>().ok());
                if let Some(i) = index.filter(|&i| i < slots.len()) {
                    slots[i].store(now, Ordering::Relaxed);
                    counts[i].fetch_add(1, Ordering::Relaxed);
                }
            }
        })?;
        Ok(DirWatch { arrivals, renames, fd, wd })
    }

    pub(super) fn reset(&self) {
        for slot in self.arrivals.iter().chain(self.renames.iter()) {
            slot.store(0, Ordering::Relaxed);
        }
    }

    pub(super) fn arrived(&self, index: usize) -> u64 {
        self.arrivals[index].load(Ordering::Relaxed)
    }

    /// How many times file `index` was renamed into place since the last reset.
    pub(super) fn renames(&self, index: usize) -> u64 {
        self.renames[index].load(Ordering::Relaxed)
    }

    pub(super) fn all_arrived(&self, range: std::ops::Range<usize>) -> bool {
        range.into_iter().all(|i| self.arrived(i) != 0)
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        // Wakes the reader thread with IN_IGNORED.
        let _ = inotify::remove_watch(&*self.fd, self.wd);
    }
}
