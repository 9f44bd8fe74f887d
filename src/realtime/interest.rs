//! Which projects other hubs subscribe to, so that this hub's writes to them ship their
//! event with the announcement ([`super::wakeups`]) instead of leaving every other hub to
//! read it from the log after the NOTIFY.
//!
//! A write reads its own event back (one more lateral read in its statement) only when
//! somebody will use it: this hub's own feed of the project, or another hub's (then only
//! an event small enough to ship, [`super::wakeups::OwnEvent`]). Another hub
//! says so with a `w:<project>` entry in its announcement when it is woken for a project it
//! has subscribers of, and renews that every [`RENEW`] while the project's events keep
//! coming from elsewhere; the interest lapses [`LEASE`] after the last renewal, so a hub
//! that lost its subscribers (or died) stops costing the writers within that time. A lost
//! or late `w:` entry costs only latency: the other hub then reads the log as before.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// How long another hub's interest in a project lasts after its last `w:` entry.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a hub renews its interest in a project whose events reach it from other hubs
/// (a third of [`LEASE`]: two renewals may be lost before the interest lapses).
pub const RENEW: Duration = Duration::from_secs(10);
/// Projects tracked at most (on each side); beyond, a new project is not tracked until
/// entries lapse (its events are then read from the log, as without this module).
const CAPACITY: usize = 65_536;

/// Projects, each until a deadline; bounded by `CAPACITY`.
#[derive(Debug, Default)]
pub struct Deadlines {
    until: HashMap<Uuid, Instant>,
}

impl Deadlines {
    /// Whether `project` has a deadline after `now`.
    pub fn holds(&self, project: Uuid, now: Instant) -> bool {
        self.until.get(&project).is_some_and(|until| *until > now)
    }

    /// Sets `project`'s deadline; false when the map is full of live deadlines (lapsed
    /// ones are dropped first).
    pub fn set(&mut self, project: Uuid, until: Instant, now: Instant) -> bool {
        if self.until.len() >= CAPACITY && !self.until.contains_key(&project) {
            self.until.retain(|_, deadline| *deadline > now);
            if self.until.len() >= CAPACITY {
                return false;
            }
        }
        self.until.insert(project, until);
        true
    }
}

/// The receiving side: when to say (again) that this hub subscribes to a project.
#[derive(Debug, Default)]
pub struct Renewals(Deadlines);

impl Renewals {
    /// This hub was woken at `now` by another hub for `project`, which it has subscribers
    /// of: whether to announce its interest now (at most once per [`RENEW`] per project).
    pub fn due(&mut self, project: Uuid, now: Instant) -> bool {
        !self.0.holds(project, now) && self.0.set(project, now + RENEW, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_holds_until_it_passes_and_a_full_map_makes_room_only_from_lapsed_ones() {
        let now = Instant::now();
        let mut deadlines = Deadlines::default();
        let (p, q) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(!deadlines.holds(p, now));
        assert!(deadlines.set(p, now + LEASE, now));
        assert!(deadlines.holds(p, now + LEASE - Duration::from_millis(1)));
        assert!(!deadlines.holds(p, now + LEASE));
        assert!(!deadlines.holds(q, now));

        // Full of live deadlines: a new project is refused, a known one renewed.
        let mut full = Deadlines::default();
        for i in 0..CAPACITY {
            let until = if i % 2 == 0 { now + LEASE } else { now + Duration::from_secs(1) };
            assert!(full.set(Uuid::from_u128(i as u128), until, now));
        }
        assert!(!full.set(q, now + LEASE, now));
        assert!(full.set(Uuid::from_u128(1), now + LEASE, now));
        // Once half have lapsed, they make room.
        let later = now + Duration::from_secs(2);
        assert!(full.set(q, later + LEASE, later));
        assert!(full.holds(q, later));
        // The lapsed ones went; the live ones (and the renewed one) stayed.
        assert_eq!(full.until.len(), CAPACITY / 2 + 2);
        assert!(full.holds(Uuid::from_u128(0), later) && full.holds(Uuid::from_u128(1), later));
        assert!(!full.until.contains_key(&Uuid::from_u128(3)));
    }

    #[test]
    fn interest_is_announced_once_per_renewal_period() {
        let now = Instant::now();
        let mut renewals = Renewals::default();
        let (p, q) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(renewals.due(p, now));
        assert!(!renewals.due(p, now + RENEW - Duration::from_millis(1)));
        assert!(renewals.due(q, now));
        assert!(renewals.due(p, now + RENEW));
        assert!(!renewals.due(p, now + RENEW));
    }
}
