//! Delta payloads for subscribers (CONTRACT section 12). Each feed keeps the recent
//! contents of its project's files ([`RecentFiles`], bytes-capped, least recently used out)
//! and, once per event, turns a `file:update` whose previous version it holds into a second
//! frame carrying a Fossil delta instead of the content, when that is smaller than half the
//! content. The frame remembers the seq of the event that delivered the base, so a socket
//! sends the delta only on a channel it has been sending contiguously since at least that
//! seq (see `machine.rs`): no per-socket copy of any content.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use synchub_protocol::{BulkApplyPayload, FileDeletePayload, FileDeltaPayload, FileUpdatePayload, delta, event_names};
use uuid::Uuid;

use super::outbox::{DeltaFrame, EventFrame};
use super::protocol;

/// Bytes of file contents a feed keeps to build deltas from (per project channel with
/// subscribers on this hub): room for the largest file (2 MiB by default) and its
/// neighbours being edited.
pub const RECENT_FILES_BYTES: usize = 4 << 20;
/// Bytes of file contents all the feeds of one hub keep together: a hub with subscribers
/// on many projects stays bounded (a feed that finds the budget spent evicts its own oldest
/// contents, or keeps none: its events then carry contents, as without deltas).
pub const HUB_RECENT_FILES_BYTES: usize = 256 << 20;
/// Below this size a file's events always carry its content: the delta would save little.
const MIN_DELTA_CONTENT: usize = 1024;

/// The hub-wide budget of [`HUB_RECENT_FILES_BYTES`] the feeds' [`RecentFiles`] draw from.
pub struct RecentBudget {
    used: AtomicUsize,
    cap: usize,
}

impl RecentBudget {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(RecentBudget { used: AtomicUsize::new(0), cap })
    }

    /// Takes `bytes` from the budget, or nothing when that would overspend it.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.cap)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

struct Recent {
    version: i64,
    /// The seq of the event that delivered this version.
    seq: i64,
    hash: String,
    content: Arc<str>,
    last_used: u64,
}

/// An event frame's payload (parsed once per event, by its feed).
fn payload<T: serde::de::DeserializeOwned>(frame: &EventFrame) -> Result<T, serde_json::Error> {
    #[derive(Deserialize)]
    struct Envelope<T> {
        payload: T,
    }
    serde_json::from_str::<Envelope<T>>(frame.text.as_str()).map(|envelope| envelope.payload)
}

/// A project's recently delivered file contents, bytes-capped, least recently used out.
pub struct RecentFiles {
    files: HashMap<String, Recent>,
    bytes: usize,
    cap_bytes: usize,
    clock: u64,
    /// What `bytes` is drawn from (given back on forget and drop).
    budget: Arc<RecentBudget>,
}

impl Drop for RecentFiles {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

impl RecentFiles {
    pub fn new(cap_bytes: usize, budget: Arc<RecentBudget>) -> Self {
        RecentFiles { files: HashMap::new(), bytes: 0, cap_bytes, clock: 0, budget }
    }

    /// Takes note of `frame` (the next event of `project`'s log) and returns it with a
    /// delta frame added when one is worth sending.
    pub fn on_event(&mut self, project: Uuid, frame: Arc<EventFrame>) -> Arc<EventFrame> {
        match frame.event_type.as_str() {
            event_names::FILE_UPDATE => {
                let Ok(update) = payload::<FileUpdatePayload>(&frame) else { return frame };
                let delta = self.delta_for(project, frame.seq, &update);
                self.remember(
                    update.file.file_path,
                    update.file.version,
                    frame.seq,
                    update.file.content_hash,
                    update.file.content,
                );
                match delta {
                    Some(delta) => Arc::new(EventFrame {
                        seq: frame.seq,
                        event_type: frame.event_type.clone(),
                        text: frame.text.clone(),
                        committed_at_us: frame.committed_at_us,
                        delta: Some(delta),
                    }),
                    None => frame,
                }
            }
            event_names::FILE_DELETE => {
                if let Ok(delete) = payload::<FileDeletePayload>(&frame) {
                    self.forget(&delete.file.file_path);
                }
                frame
            }
            event_names::BULK_APPLY => {
                match payload::<BulkApplyPayload>(&frame) {
                    Ok(bulk) => {
                        for deleted in bulk.deletes {
                            self.forget(&deleted.file_path);
                        }
                        for file in bulk.files {
                            self.remember(file.file_path, file.version, frame.seq, file.content_hash, file.content);
                        }
                    }
                    // Unreadable (a newer payload shape): nothing known about its paths stays.
                    Err(_) => self.clear(),
                }
                frame
            }
            _ => {
                self.clear();
                frame
            }
        }
    }

    /// The delta frame for `update` at `seq`, when the previous version is known and the
    /// delta is smaller than half the content.
    fn delta_for(&mut self, project: Uuid, seq: i64, update: &FileUpdatePayload) -> Option<DeltaFrame> {
        let file = &update.file;
        if file.content.len() < MIN_DELTA_CONTENT {
            return None;
        }
        let base = self.files.get(&file.file_path).filter(|base| base.version + 1 == file.version)?;
        let encoded = delta::encode(&base.content, &file.content);
        if !delta::worth_sending(encoded.len(), file.content.len()) {
            return None;
        }
        let payload = FileDeltaPayload {
            file_path: file.file_path.clone(),
            file_type: file.file_type.clone(),
            version: file.version,
            content_hash: file.content_hash.clone(),
            base_version: base.version,
            base_hash: base.hash.clone(),
            delta: encoded,
            timestamp: update.timestamp.clone(),
            actor: update.actor.clone(),
            op_id: update.op_id.clone(),
        };
        let payload = serde_json::to_string(&payload).ok()?;
        let text = protocol::event_frame(project, seq, event_names::FILE_UPDATE, &payload);
        Some(DeltaFrame { base_seq: base.seq, text: text.into() })
    }

    fn remember(&mut self, path: String, version: i64, seq: i64, hash: String, content: String) {
        self.forget(&path);
        if content.len() > self.cap_bytes {
            return;
        }
        // Room within this feed's cap, then within the hub's budget: oldest out first.
        while self.bytes + content.len() > self.cap_bytes || !self.budget.take(content.len()) {
            if !self.forget_oldest() {
                return; // the hub's budget is spent by other feeds: keep nothing new
            }
        }
        self.clock += 1;
        self.bytes += content.len();
        let recent = Recent { version, seq, hash, content: content.into(), last_used: self.clock };
        self.files.insert(path, recent);
    }

    /// Forgets the least recently used content; false when there was none.
    fn forget_oldest(&mut self) -> bool {
        let oldest = self.files.iter().min_by_key(|(_, recent)| recent.last_used).map(|(path, _)| path.clone());
        match oldest {
            Some(path) => {
                self.forget(&path);
                true
            }
            None => false,
        }
    }

    fn forget(&mut self, path: &str) {
        if let Some(old) = self.files.remove(path) {
            self.bytes -= old.content.len();
            self.budget.give_back(old.content.len());
        }
    }

    fn clear(&mut self) {
        self.files.clear();
        self.budget.give_back(self.bytes);
        self.bytes = 0;
    }

    #[cfg(test)]
    fn paths(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = self.files.keys().map(String::as_str).collect();
        paths.sort();
        paths
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn update(project: Uuid, seq: i64, path: &str, version: i64, content: &str) -> Arc<EventFrame> {
        let payload = json!({"file_path": path, "file_type": "text", "content": content,
            "content_hash": delta::content_hash(content.as_bytes()), "version": version,
            "timestamp": "t", "actor": "alice", "op_id": null});
        let text = protocol::event_frame(project, seq, "file:update", &payload.to_string());
        Arc::new(EventFrame {
            seq,
            event_type: "file:update".into(),
            text: text.into(),
            committed_at_us: 0,
            delta: None,
        })
    }

    fn big(n: usize) -> String {
        (0..n).map(|i| format!("line {i} of a file that is long enough\n")).collect()
    }

    #[test]
    fn an_update_of_a_known_previous_version_carries_a_delta_frame() {
        let project = Uuid::new_v4();
        let mut recent = RecentFiles::new(1 << 20, RecentBudget::new(HUB_RECENT_FILES_BYTES));
        let v1 = big(100);
        assert!(recent.on_event(project, update(project, 1, "a", 1, &v1)).delta.is_none(), "no base yet");
        let v2 = v1.replacen("line 50", "line fifty", 1);
        let frame = recent.on_event(project, update(project, 2, "a", 2, &v2));
        let delta_frame = frame.delta.as_ref().expect("a delta");
        assert_eq!(delta_frame.base_seq, 1);
        assert!(delta_frame.text.len() < 600, "{}", delta_frame.text.len());
        let synchub_protocol::ServerFrame::Event(event) =
            synchub_protocol::ServerFrame::parse(delta_frame.text.as_str()).unwrap()
        else {
            panic!("not an event")
        };
        let Some(synchub_protocol::Event::FileDelta(payload)) = event.event().unwrap() else { panic!("not a delta") };
        assert_eq!((event.seq, payload.version, payload.base_version, payload.actor.as_str()), (2, 2, 1, "alice"));
        assert_eq!(payload.base_hash, delta::content_hash(v1.as_bytes()));
        assert_eq!(delta::apply_verified(&v1, &payload.delta, &payload.content_hash), Some(v2));
    }

    #[test]
    fn no_delta_when_it_is_not_smaller_than_half_or_the_base_is_not_the_previous_version() {
        let project = Uuid::new_v4();
        let mut recent = RecentFiles::new(1 << 20, RecentBudget::new(HUB_RECENT_FILES_BYTES));
        recent.on_event(project, update(project, 1, "a", 1, &big(100)));
        // Rewritten entirely: the delta is about the size of the content.
        assert!(recent.on_event(project, update(project, 2, "a", 2, &"x".repeat(3000))).delta.is_none());
        // A version skipped (written while this feed did not run): no base.
        assert!(recent.on_event(project, update(project, 3, "a", 4, &"x".repeat(3001))).delta.is_none());
        // A delete forgets the path.
        let delete = json!({"file_path": "a", "version": 5});
        let text = protocol::event_frame(project, 4, "file:delete", &delete.to_string());
        let frame = Arc::new(EventFrame {
            seq: 4,
            event_type: "file:delete".into(),
            text: text.into(),
            committed_at_us: 0,
            delta: None,
        });
        recent.on_event(project, frame);
        assert!(recent.paths().is_empty());
    }

    #[test]
    fn recent_files_are_capped_in_bytes_least_recently_used_out() {
        let project = Uuid::new_v4();
        let mut recent = RecentFiles::new(2500, RecentBudget::new(HUB_RECENT_FILES_BYTES));
        for (seq, path) in ["a", "b", "c"].into_iter().enumerate() {
            recent.on_event(project, update(project, seq as i64 + 1, path, 1, &"y".repeat(1000)));
        }
        assert_eq!(recent.paths(), ["b", "c"]);
        assert_eq!(recent.bytes, 2000);
        recent.on_event(project, update(project, 4, "huge", 1, &"z".repeat(3000)));
        assert_eq!(recent.paths(), ["b", "c"], "larger than the cap: not kept");
    }

    #[test]
    fn the_feeds_of_a_hub_share_one_budget_and_give_it_back() {
        let project = Uuid::new_v4();
        let budget = RecentBudget::new(2500);
        let mut first = RecentFiles::new(1 << 20, budget.clone());
        let mut second = RecentFiles::new(1 << 20, budget.clone());
        first.on_event(project, update(project, 1, "a", 1, &"y".repeat(1000)));
        first.on_event(project, update(project, 2, "b", 1, &"y".repeat(1000)));
        // The budget has room for 500 more: the second feed keeps nothing of 1,000 bytes...
        second.on_event(project, update(project, 1, "c", 1, &"y".repeat(1000)));
        assert!(second.paths().is_empty());
        assert_eq!(budget.used(), 2000);
        // ...while the first makes room from its own oldest.
        first.on_event(project, update(project, 3, "d", 1, &"y".repeat(1000)));
        assert_eq!(first.paths(), ["b", "d"]);
        assert_eq!(budget.used(), 2000);
        drop(first);
        assert_eq!(budget.used(), 0, "a feed that ends gives its bytes back");
        second.on_event(project, update(project, 2, "c", 2, &"y".repeat(1000)));
        assert_eq!(second.paths(), ["c"]);
    }
}
