//! Retry delays for reconnecting clients (CONTRACT: "reconnect with backoff + jitter"):
//! exponential from a first step to a cap, each delay drawn between half and all of the
//! current step, so that many clients cut off by the same restart do not retry in
//! lockstep. One type for every retry loop: the agent's reconnects, the hub's LISTEN
//! connection and its event pumps. Here because the protocol crate is the one crate the
//! hub and the agent both depend on, and this needs nothing but std.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

static SALT: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    /// xorshift state: jitter needs no cryptographic randomness, nor a crate.
    seed: u64,
}

impl Backoff {
    /// Steps start at `first` and double up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        // Two loops started in the same nanosecond still draw different delays.
        let salt = SALT.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        Self { first, max, next: first, seed: (nanos ^ salt ^ (u64::from(std::process::id()) << 32)) | 1 }
    }

    /// The next delay: between half and all of the current step, which then doubles.
    pub fn next_delay(&mut self) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let step = self.next.as_millis() as u64;
        let delay = Duration::from_millis(step / 2 + self.seed % (step / 2 + 1));
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// After a connection that worked: start small again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(5);

    #[test]
    fn grows_with_jitter_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(FIRST, MAX);
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= FIRST / 2 && delays[0] <= FIRST);
        assert!(delays.iter().all(|d| *d <= MAX));
        assert!(delays[9] >= MAX / 2);
        backoff.reset();
        assert!(backoff.next_delay() <= FIRST);
    }
}
