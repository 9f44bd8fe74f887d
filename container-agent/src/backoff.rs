//! Reconnect delays: exponential from 250 ms to 5 s, with jitter so that many agents
//! cut off by the same hub restart do not reconnect in lockstep.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const FIRST: Duration = Duration::from_millis(250);
const MAX: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    /// xorshift state: jitter needs no cryptographic randomness, nor a crate.
    seed: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    pub fn new() -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        Self { next: FIRST, seed: nanos ^ (u64::from(std::process::id()) << 32) | 1 }
    }

    /// The next delay: between half and all of the current step, which then doubles.
    pub fn next_delay(&mut self) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let step = self.next.as_millis() as u64;
        let delay = Duration::from_millis(step / 2 + self.seed % (step / 2 + 1));
        self.next = (self.next * 2).min(MAX);
        delay
    }

    /// After a connection that worked: start small again.
    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= FIRST / 2 && delays[0] <= FIRST);
        assert!(delays.iter().all(|d| *d <= MAX));
        assert!(delays[9] >= MAX / 2);
        backoff.reset();
        assert!(backoff.next_delay() <= FIRST);
    }
}
