//! One snapshot build at a time per project: concurrent requests for one project wait for
//! the build in progress and then reuse it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

#[derive(Default)]
pub struct BuildLocks {
    locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

impl BuildLocks {
    /// The lock of `project`'s builds; locks nobody holds are dropped on the way.
    pub fn for_project(&self, project: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(project).or_default().clone()
    }
}
