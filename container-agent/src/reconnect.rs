//! The wait between reconnect attempts: a backoff step (250 ms → 5 s with jitter), cut
//! short by a cheap TCP probe of the hub's `host:port` so that an agent reconnects within
//! about a probe interval once the network heals, instead of sleeping out a long step.
//! A hub that accepts TCP but refuses the upgrade (a 503, say) gets only a few
//! probe-triggered attempts before the plain backoff takes over again (no hot loop).

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use synchub_protocol::Backoff;

/// Reconnect delays: from 250 ms up to 5 s, with jitter (see [`Backoff`]).
pub const RECONNECT_FIRST: Duration = Duration::from_millis(250);
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How often the hub is probed while backing off, and how long one probe may take to
/// connect.
const PROBE_EVERY: Duration = Duration::from_millis(100);
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(100);
/// A proxy or balancer with nothing behind it accepts and closes at once; a live hub
/// keeps the connection open waiting for a request. Closed within this long = dead.
const PROBE_LINGER: Duration = Duration::from_millis(30);
/// Probe-triggered attempts allowed without a successful join before probing stops
/// cutting the backoff short (until the next join).
const MAX_PROBE_WINS: u32 = 2;

/// The backoff plus the count of probe-triggered attempts that have not yet joined.
#[derive(Debug)]
pub struct Reconnect {
    backoff: Backoff,
    probe_wins: u32,
    /// The last wait was ended by a probe (the next attempt is that probe's).
    probe_led: bool,
}

/// How to wait before the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// The longest wait (one backoff step).
    pub delay: Duration,
    /// Whether a probe that finds the hub alive may end the wait early.
    pub probe: bool,
}

impl Reconnect {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { backoff: Backoff::new(first, max), probe_wins: 0, probe_led: false }
    }

    /// The next wait: one backoff step, probed unless probes already led to attempts that
    /// failed.
    pub fn next_wait(&mut self) -> Wait {
        self.probe_led = false;
        Wait { delay: self.backoff.next_delay(), probe: self.probe_wins < MAX_PROBE_WINS }
    }

    /// A probe found the hub alive: the next attempt is made at once, from a small step.
    pub fn probe_succeeded(&mut self) {
        self.probe_wins += 1;
        self.probe_led = true;
        self.backoff.reset();
    }

    /// The attempt failed before any HTTP answer (connection reset, handshake never
    /// answered): what the probe found was not a hub but something that accepts and closes
    /// more slowly than the probe waits (a proxy or balancer with nothing behind it, on a
    /// loaded machine). Such a win does not count against the probes' budget, which is for
    /// hubs that answer and refuse: otherwise a long outage behind such a proxy used it up,
    /// and after the heal the agent slept out a whole backoff step (seconds) unprobed.
    pub fn attempt_missed_the_hub(&mut self) {
        if std::mem::take(&mut self.probe_led) {
            self.probe_wins = self.probe_wins.saturating_sub(1);
        }
    }

    /// A connection joined: start small again, and trust probes again.
    pub fn joined(&mut self) {
        self.probe_wins = 0;
        self.backoff.reset();
    }

    /// Waits one step, probing `target` meanwhile when allowed; true when asked to stop.
    pub async fn pause(&mut self, target: Option<&(String, u16)>, shutdown: &mut watch::Receiver<bool>) -> bool {
        let wait = self.next_wait();
        let deadline = Instant::now() + wait.delay;
        let probing = async {
            match target {
                Some(target) if wait.probe => probe_until(target, deadline).await,
                _ => {
                    tokio::time::sleep_until(deadline).await;
                    false
                }
            }
        };
        tokio::select! {
            alive = probing => {
                if alive {
                    tracing::info!("the hub answers again; reconnecting now");
                    self.probe_succeeded();
                }
                false
            }
            _ = shutdown.changed() => true,
        }
    }
}

/// Probes every [`PROBE_EVERY`] until `deadline`; true as soon as one finds the hub alive.
/// Bounded: at most one probe per interval, each bounded by its timeouts.
async fn probe_until(target: &(String, u16), deadline: Instant) -> bool {
    loop {
        let next = Instant::now() + PROBE_EVERY;
        if next >= deadline {
            tokio::time::sleep_until(deadline).await;
            return false;
        }
        tokio::time::sleep_until(next).await;
        if tokio::time::timeout_at(deadline, probe(target)).await.unwrap_or(false) {
            return true;
        }
    }
}

/// One plain TCP connect (no HTTP, no token): alive when it connects and is not closed
/// at once by the other end.
async fn probe((host, port): &(String, u16)) -> bool {
    let connect = TcpStream::connect((host.as_str(), *port));
    let Ok(Ok(mut stream)) = tokio::time::timeout(PROBE_CONNECT_TIMEOUT, connect).await else {
        return false;
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(PROBE_LINGER, stream.read(&mut byte)).await {
        Err(_) => true,           // still open: something is listening
        Ok(Ok(read)) => read > 0, // closed (0) = a proxy with nothing behind it
        Ok(Err(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(30);

    fn grown() -> Reconnect {
        let mut reconnect = Reconnect::new(FIRST, MAX);
        for _ in 0..10 {
            reconnect.next_wait();
        }
        reconnect
    }

    #[test]
    fn a_live_probe_resets_the_backoff() {
        let mut reconnect = grown();
        assert!(reconnect.next_wait().delay >= MAX / 2);
        reconnect.probe_succeeded();
        let wait = reconnect.next_wait();
        assert!(wait.delay <= FIRST, "{wait:?}");
        assert!(wait.probe);
    }

    #[test]
    fn probes_stop_cutting_the_backoff_short_when_attempts_keep_failing() {
        let mut reconnect = grown();
        for _ in 0..MAX_PROBE_WINS {
            assert!(reconnect.next_wait().probe);
            reconnect.probe_succeeded();
        }
        // The hub accepts TCP but refuses the upgrade: plain backoff, growing again.
        let waits: Vec<Wait> = (0..10).map(|_| reconnect.next_wait()).collect();
        assert!(waits.iter().all(|w| !w.probe));
        assert!(waits.last().unwrap().delay >= MAX / 2);
        reconnect.joined();
        let wait = reconnect.next_wait();
        assert!(wait.probe && wait.delay <= FIRST);
    }

    #[test]
    fn probes_fooled_during_a_long_outage_still_cut_the_wait_short_after_it() {
        let mut reconnect = grown();
        // Behind a proxy that accepts and closes slowly: probes find "something" again and
        // again, and every attempt they lead to is reset before any HTTP answer.
        for _ in 0..10 {
            assert!(reconnect.next_wait().probe);
            reconnect.probe_succeeded();
            reconnect.attempt_missed_the_hub();
        }
        // The network heals: a probe must still be able to end the wait.
        assert!(reconnect.next_wait().probe);
        // A miss after a plain wait refunds nothing.
        let mut plain = grown();
        for _ in 0..MAX_PROBE_WINS {
            plain.next_wait();
            plain.probe_succeeded();
        }
        assert!(!plain.next_wait().probe);
        plain.attempt_missed_the_hub();
        assert!(!plain.next_wait().probe);
    }

    #[tokio::test]
    async fn a_probe_tells_a_listener_from_a_closed_port_and_an_accept_then_close() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = ("127.0.0.1".to_owned(), listener.local_addr().unwrap().port());
        let keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        assert!(probe(&open).await);
        keep.abort();
        let _ = keep.await;
        assert!(!probe(&open).await, "a closed port looked alive");

        let closing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dropped = ("127.0.0.1".to_owned(), closing.local_addr().unwrap().port());
        tokio::spawn(async move {
            while let Ok((stream, _)) = closing.accept().await {
                drop(stream);
            }
        });
        assert!(!probe(&dropped).await, "an accept-then-close looked alive");
    }
}
