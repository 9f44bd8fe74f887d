//! The sending side of one socket as a state machine: `on(input) -> actions`. It owns each
//! channel's position (the next seq the client is owed), skips duplicates, asks for gap
//! fills from the log, ends channels the log no longer covers (retention), enforces the
//! channel limit, and decides when to ping and when (and with which code) to close.
//!
//! It does no I/O and reads no clock: the driver in `socket.rs` feeds it inputs (outbox
//! items, fill results, timer ticks with the time) and carries out its actions in order
//! (write a frame, read the log, subscribe, close). A `Fill` action is answered with
//! `Filled` (and a `FindOldest` with `Oldest`) before any other input, so the machine
//! never sees a live event in the middle of a fill.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::time::Instant;
use uuid::Uuid;

use super::channel_map::ChannelMap;
use super::outbox::EventFrame;
use super::outbox::Out;
use super::protocol::{self, close};
use crate::error::ApiError;

/// The hub pings this often…
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// …and drops a peer silent for this long.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// Channels one socket may join.
pub const MAX_CHANNELS: usize = 64;
/// Events read per gap-fill query.
pub const FILL_PAGE: usize = 500;

/// Why a slow consumer is closed (4008).
pub const SLOW_CONSUMER_REASON: &str = "slow consumer: reconnect with since";

/// What happens to the socket's sending side.
#[derive(Debug)]
pub enum Input {
    /// An event of a project's feed (possibly one the client already has).
    Live { project: Uuid, frame: Arc<EventFrame> },
    /// A reply or notice, already serialized.
    Text(String),
    /// A presence frame (shared by every socket of its channel).
    Presence(Utf8Bytes),
    /// An authorized join: deliver `project` from `next_seq` (`head` is its last_seq at the
    /// join, `reader` the user to re-check on member changes).
    Join { project: Uuid, next_seq: i64, head: i64, reply: String, reader: Option<String> },
    /// Stop delivering `project`; `notice` tells the client why (lost access).
    Leave { project: Uuid, notice: Option<String> },
    /// The answer to a [`Action::Fill`]: one page of the log, or the log is unreachable.
    Filled { fill: Fill, frames: Result<Vec<Arc<EventFrame>>, LogUnavailable> },
    /// The answer to a [`Action::FindOldest`]: the oldest seq still in the log.
    Oldest { fill: Fill, oldest: i64 },
    /// A timer fired: `now`, and when the peer was last heard from.
    Tick { now: Instant, heard: Instant },
    /// The hub is shutting down (contract 8: close with 1012, clients resume elsewhere).
    Shutdown,
    /// The outbox overflowed: the peer reads too slowly.
    Overflowed,
    /// Close with this code (revoked session, expired or refused token, reader ended).
    Close(u16, &'static str),
}

impl From<Out> for Input {
    fn from(item: Out) -> Self {
        match item {
            Out::Event { project, frame } => Input::Live { project, frame },
            Out::Text(text) => Input::Text(text),
            Out::Presence(text) => Input::Presence(text),
            Out::Join { project, next_seq, head, reply, reader } => {
                Input::Join { project, next_seq, head, reply, reader }
            }
            Out::Leave { project, notice } => Input::Leave { project, notice },
            Out::Close(code, reason) => Input::Close(code, reason),
            Out::Shutdown => Input::Shutdown,
        }
    }
}

/// What the driver is to do, in order.
#[derive(Debug, Clone)]
pub enum Action {
    /// Write a text frame.
    Send(String),
    /// Write a text frame shared with other sockets (presence).
    SendShared(Utf8Bytes),
    /// Write an event frame of `project` (counted as delivered): `text` is the frame's own
    /// text, or its delta frame's when this socket saw the delta's base.
    SendEvent { project: Uuid, frame: Arc<EventFrame>, text: Utf8Bytes },
    /// Write a WebSocket ping.
    Ping,
    /// Register for `project`'s live events (replacing an earlier registration).
    Subscribe { project: Uuid, head: i64, reader: Option<String> },
    /// Drop the registration for `project`.
    Unsubscribe { project: Uuid },
    /// Flush what is written, read up to [`FILL_PAGE`] events after `fill.after` and answer
    /// with [`Input::Filled`].
    Fill(Fill),
    /// Read the oldest seq in `fill.project`'s log and answer with [`Input::Oldest`].
    FindOldest(Fill),
    /// Send a close frame and end the socket; nothing after it is carried out.
    Close { code: u16, reason: &'static str },
}

/// A gap fill in progress: `project`'s events after `after`, up to `until` (None: to the end
/// of the log), then `then` (the live event that revealed the gap).
#[derive(Debug, Clone)]
pub struct Fill {
    pub project: Uuid,
    pub after: i64,
    pub until: Option<i64>,
    pub then: Option<Arc<EventFrame>>,
}

/// The log could not be read (the database is away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogUnavailable;

/// Where a joined channel stands on this socket.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    /// The next seq the client is owed.
    pub next: i64,
    /// The first seq sent (or owed) since the join: the client has every event from here
    /// on, which is all a delta needs to know about its base (CONTRACT section 12).
    pub from: i64,
}

impl Position {
    /// Whether `frame` goes to this socket as its delta: the delta's base came on this
    /// socket since the join.
    pub fn takes_delta(&self, frame: &EventFrame) -> bool {
        frame.delta.as_ref().is_some_and(|delta| delta.base_seq >= self.from)
    }
}

pub struct Machine {
    /// Joined channels and where each stands.
    channels: ChannelMap<Position>,
    next_ping: Instant,
    closed: bool,
}

impl Machine {
    pub fn new(now: Instant) -> Self {
        Machine { channels: ChannelMap::default(), next_ping: now + PING_EVERY, closed: false }
    }

    /// When the driver must send a [`Input::Tick`] at the latest (given when the peer was
    /// last heard from).
    pub fn deadline(&self, heard: Instant) -> Instant {
        self.next_ping.min(heard + IDLE_LIMIT)
    }

    /// The joined channels' positions, lent to the socket's lane while the writer is parked
    /// (see lane.rs): the machine is not used until they are back.
    pub fn positions(&mut self) -> &mut ChannelMap<Position> {
        &mut self.channels
    }

    /// The channels joined now (for the socket's close log).
    pub fn projects(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.channels.keys().copied()
    }

    pub fn on(&mut self, input: Input) -> Vec<Action> {
        let mut actions = VecDeque::new();
        self.on_into(input, &mut actions);
        actions.into()
    }

    /// [`Machine::on`], appending to `actions`: the driver carries them out from that one
    /// reused queue, so a delivered event costs no allocation.
    pub fn on_into(&mut self, input: Input, actions: &mut VecDeque<Action>) {
        if self.closed {
            return;
        }
        match input {
            Input::Live { project, frame } => {
                let Some(next) = self.channels.get(&project).map(|position| position.next) else { return };
                if frame.seq > next {
                    let fill = Fill { project, after: next - 1, until: Some(frame.seq - 1), then: Some(frame) };
                    actions.push_back(Action::Fill(fill));
                } else {
                    self.send_event(actions, project, frame);
                }
            }
            Input::Text(text) => actions.push_back(Action::Send(text)),
            Input::Presence(text) => actions.push_back(Action::SendShared(text)),
            Input::Join { project, next_seq, head, reply, reader } => {
                if !self.channels.contains_key(&project) && self.channels.len() >= MAX_CHANNELS {
                    let err = ApiError::InvalidRequest(format!("at most {MAX_CHANNELS} channels per socket"));
                    actions.push_back(Action::Send(protocol::error(
                        &None,
                        Some(&protocol::channel_name(project)),
                        &err,
                    )));
                    return;
                }
                // Subscribe first, then read the log: nothing committed in between is
                // missed, and what arrives twice is skipped by seq.
                self.channels.insert(project, Position { next: next_seq, from: next_seq });
                actions.push_back(Action::Subscribe { project, head, reader });
                actions.push_back(Action::Send(reply));
                actions.push_back(Action::Fill(Fill { project, after: next_seq - 1, until: None, then: None }));
            }
            Input::Leave { project, notice } => {
                if self.channels.remove(&project).is_some() {
                    actions.push_back(Action::Unsubscribe { project });
                }
                actions.extend(notice.map(Action::Send));
            }
            Input::Filled { fill, frames: Ok(frames) } => self.filled(actions, fill, frames),
            Input::Filled { frames: Err(LogUnavailable), .. } => {
                // The socket cannot stay contiguous; the client resumes with since after
                // reconnecting.
                self.close(actions, close::GOING_AWAY, "temporarily unavailable: reconnect with since");
            }
            Input::Oldest { fill, oldest } => {
                let next = fill.after + 1;
                if oldest > next && self.channels.remove(&fill.project).is_some() {
                    actions.push_back(Action::Unsubscribe { project: fill.project });
                    actions.push_back(Action::Send(protocol::resync_required(fill.project, oldest)));
                }
                // Otherwise it is not in the log yet; the next wake-up delivers it.
                self.then(actions, fill);
            }
            Input::Tick { now, heard } => {
                if now >= heard + IDLE_LIMIT {
                    self.close(actions, close::GOING_AWAY, "idle");
                } else if now >= self.next_ping {
                    self.next_ping = now + PING_EVERY;
                    actions.push_back(Action::Ping);
                }
            }
            Input::Shutdown => self.close(actions, close::RESTART, "hub restarting: reconnect with since"),
            Input::Overflowed => self.close(actions, close::SLOW_CONSUMER, SLOW_CONSUMER_REASON),
            Input::Close(code, reason) => self.close(actions, code, reason),
        }
    }

    /// A page of the log arrived: send what continues the channel, ask for the next page,
    /// or find out why the log does not continue it.
    fn filled(&mut self, actions: &mut VecDeque<Action>, fill: Fill, frames: Vec<Arc<EventFrame>>) {
        let Some(next) = self.channels.get(&fill.project).map(|position| position.next) else { return };
        if fill.until.is_some_and(|until| next > until) {
            return self.then(actions, fill);
        }
        if frames.first().is_none_or(|frame| frame.seq != next) {
            if frames.is_empty() && fill.until.is_none() {
                return; // caught up
            }
            // A hole: trimmed by retention, or not committed yet.
            actions.push_back(Action::FindOldest(Fill { after: next - 1, ..fill }));
            return;
        }
        let full_page = frames.len() >= FILL_PAGE;
        for frame in frames {
            if fill.until.is_some_and(|until| frame.seq > until) {
                return self.then(actions, fill);
            }
            self.send_event(actions, fill.project, frame);
        }
        match self.channels.get(&fill.project) {
            Some(position) if full_page => actions.push_back(Action::Fill(Fill { after: position.next - 1, ..fill })),
            _ => self.then(actions, fill),
        }
    }

    /// A fill is over: the live event that revealed the gap goes out if it is next.
    fn then(&mut self, actions: &mut VecDeque<Action>, fill: Fill) {
        if let Some(frame) = fill.then {
            self.send_event(actions, fill.project, frame);
        }
    }

    /// Sends `frame` if it is the channel's next seq (anything else is a duplicate or out of
    /// order, and is dropped).
    /// A delta goes out instead of the content when the base came on this socket since the
    /// join.
    fn send_event(&mut self, actions: &mut VecDeque<Action>, project: Uuid, frame: Arc<EventFrame>) {
        let Some(position) = self.channels.get_mut(&project) else { return };
        if frame.seq != position.next {
            return;
        }
        position.next = frame.seq + 1;
        let text = match &frame.delta {
            Some(delta) if position.takes_delta(&frame) => delta.text.clone(),
            _ => frame.text.clone(),
        };
        actions.push_back(Action::SendEvent { project, frame, text });
    }

    fn close(&mut self, actions: &mut VecDeque<Action>, code: u16, reason: &'static str) {
        self.closed = true;
        actions.push_back(Action::Close { code, reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: i64) -> Arc<EventFrame> {
        Arc::new(EventFrame {
            seq,
            event_type: "file:update".into(),
            text: format!("event {seq}").into(),
            committed_at_us: 0,
            delta: None,
        })
    }

    fn join(project: Uuid, next_seq: i64) -> Input {
        Input::Join { project, next_seq, head: next_seq - 1, reply: "joined".into(), reader: None }
    }

    fn live(project: Uuid, seq: i64) -> Input {
        Input::Live { project, frame: frame(seq) }
    }

    /// The seqs of the events among `actions`.
    fn sent(actions: &[Action]) -> Vec<i64> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::SendEvent { frame, .. } => Some(frame.seq),
                _ => None,
            })
            .collect()
    }

    fn only_fill(actions: Vec<Action>) -> Fill {
        match <[Action; 1]>::try_from(actions) {
            Ok([Action::Fill(fill)]) => fill,
            Ok([other]) => panic!("not a fill: {other:?}"),
            Err(actions) => panic!("not one action: {actions:?}"),
        }
    }

    /// Joins `project` at `next_seq` with an empty log after it.
    fn joined(machine: &mut Machine, project: Uuid, next_seq: i64) {
        let actions = machine.on(join(project, next_seq));
        assert!(
            matches!(&actions[..], [Action::Subscribe { .. }, Action::Send(reply), Action::Fill(_)] if reply == "joined")
        );
        let Some(Action::Fill(fill)) = actions.into_iter().last() else { unreachable!() };
        assert_eq!(fill.after, next_seq - 1);
        assert!(machine.on(Input::Filled { fill, frames: Ok(vec![]) }).is_empty(), "an empty log is caught up");
    }

    #[test]
    fn live_events_go_out_once_and_in_order() {
        let mut machine = Machine::new(Instant::now());
        let project = Uuid::new_v4();
        assert!(machine.on(live(project, 1)).is_empty(), "events of channels not joined are dropped");
        joined(&mut machine, project, 4);
        assert_eq!(sent(&machine.on(live(project, 3))), Vec::<i64>::new(), "before the join's position");
        assert_eq!(sent(&machine.on(live(project, 4))), [4]);
        assert_eq!(sent(&machine.on(live(project, 4))), Vec::<i64>::new(), "a duplicate");
        assert_eq!(sent(&machine.on(live(project, 5))), [5]);
    }

    /// The texts of the events among `actions`.
    fn texts(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::SendEvent { text, .. } => Some(text.as_str().to_owned()),
                _ => None,
            })
            .collect()
    }

    fn with_delta(seq: i64, base_seq: i64) -> Arc<EventFrame> {
        let delta = Some(super::super::outbox::DeltaFrame { base_seq, text: format!("delta {seq}").into() });
        Arc::new(EventFrame {
            seq,
            event_type: "file:update".into(),
            text: format!("event {seq}").into(),
            committed_at_us: 0,
            delta,
        })
    }

    #[test]
    fn a_delta_goes_only_to_a_socket_that_was_sent_its_base_since_the_join() {
        let mut machine = Machine::new(Instant::now());
        let project = Uuid::new_v4();
        joined(&mut machine, project, 3);
        // The base (seq 2) came before this socket's join: the full content.
        assert_eq!(texts(&machine.on(Input::Live { project, frame: with_delta(3, 2) })), ["event 3"]);
        // Seq 3 was sent here: a delta against it goes out as the delta.
        assert_eq!(texts(&machine.on(Input::Live { project, frame: with_delta(4, 3) })), ["delta 4"]);
        // After a leave and a rejoin the socket starts again: content until it sees a base.
        machine.on(Input::Leave { project, notice: None });
        joined(&mut machine, project, 5);
        assert_eq!(texts(&machine.on(Input::Live { project, frame: with_delta(5, 4) })), ["event 5"]);
        assert_eq!(texts(&machine.on(Input::Live { project, frame: with_delta(6, 5) })), ["delta 6"]);
    }

    #[test]
    fn a_gap_is_filled_from_the_log_before_the_live_event() {
        let mut machine = Machine::new(Instant::now());
        let project = Uuid::new_v4();
        joined(&mut machine, project, 1);
        let fill = only_fill(machine.on(live(project, 4)));
        assert_eq!((fill.project, fill.after, fill.until), (project, 0, Some(3)));
        // The log may already hold more than the gap: only the gap is taken from it.
        let actions = machine.on(Input::Filled { fill, frames: Ok((1..=5).map(frame).collect()) });
        assert_eq!(sent(&actions), [1, 2, 3, 4]);
        assert_eq!(sent(&machine.on(live(project, 5))), [5]);
    }

    #[test]
    fn a_join_reads_the_log_page_by_page() {
        let mut machine = Machine::new(Instant::now());
        let project = Uuid::new_v4();
        let log: Vec<_> = (1..=(FILL_PAGE as i64 * 2 + 7)).map(frame).collect();
        let mut actions = machine.on(join(project, 1));
        let mut seen = Vec::new();
        let mut reads = 0;
        while let Some(Action::Fill(fill)) = actions.pop_if(|action| matches!(action, Action::Fill(_))) {
            reads += 1;
            seen.extend(sent(&actions));
            let page = log.iter().filter(|f| f.seq > fill.after).take(FILL_PAGE).cloned().collect();
            actions = machine.on(Input::Filled { fill, frames: Ok(page) });
        }
        seen.extend(sent(&actions));
        assert_eq!(reads, 3);
        assert_eq!(seen, (1..=(FILL_PAGE as i64 * 2 + 7)).collect::<Vec<_>>());
    }

    #[test]
    fn a_hole_trimmed_by_retention_ends_the_channel_with_resync_required() {
        let mut machine = Machine::new(Instant::now());
        let project = Uuid::new_v4();
        let actions = machine.on(join(project, 3));
        let Some(Action::Fill(fill)) = actions.into_iter().last() else { panic!("no fill") };
        // Retention removed seqs 3..=9.
        let actions = machine.on(Input::Filled { fill, frames: Ok((10..=12).map(frame).collect()) });
        let [Action::FindOldest(fill)] = &actions[..] else { panic!("{actions:?}") };
        let actions = machine.on(Input::Oldest { fill: fill.clone(), oldest: 10 });
        assert!(matches!(&actions[0], Action::Unsubscribe { project: p } if *p == project));
        assert!(matches!(&actions[1], Action::Send(text) if *text == protocol::resync_required(project, 10)));
        assert_eq!(actions.len(), 2);
        assert!(machine.on(live(project, 13)).is_empty(), "nothing else for that channel until a new join");
    }

    #[test]
    fn a_hole_that_is_not_retention_waits_for_the_next_wake_up() {
        let mut machine = Machine::new(Instant::now());
        let project = Uuid::new_v4();
        joined(&mut machine, project, 1);
        let fill = only_fill(machine.on(live(project, 3)));
        let actions = machine.on(Input::Filled { fill, frames: Ok(vec![frame(2)]) });
        let [Action::FindOldest(fill)] = &actions[..] else { panic!("{actions:?}") };
        assert!(machine.on(Input::Oldest { fill: fill.clone(), oldest: 1 }).is_empty());
        // The channel stays, still owed seq 1.
        assert_eq!(sent(&machine.on(live(project, 1))), [1]);
    }

    #[test]
    fn an_unreachable_log_closes_the_socket_for_a_resume() {
        let mut machine = Machine::new(Instant::now());
        let project = Uuid::new_v4();
        joined(&mut machine, project, 1);
        let fill = only_fill(machine.on(live(project, 2)));
        let actions = machine.on(Input::Filled { fill, frames: Err(LogUnavailable) });
        assert!(matches!(&actions[..], [Action::Close { code: close::GOING_AWAY, .. }]));
        assert!(machine.on(live(project, 1)).is_empty(), "nothing after the close");
    }

    #[test]
    fn channels_are_limited_per_socket_but_a_rejoin_is_not_a_new_channel() {
        let mut machine = Machine::new(Instant::now());
        let projects: Vec<Uuid> = (0..MAX_CHANNELS).map(|_| Uuid::new_v4()).collect();
        for project in &projects {
            joined(&mut machine, *project, 1);
        }
        let extra = Uuid::new_v4();
        let actions = machine.on(join(extra, 1));
        let [Action::Send(text)] = &actions[..] else { panic!("{actions:?}") };
        assert!(text.contains("at most 64 channels per socket"), "{text}");
        assert!(machine.on(live(extra, 1)).is_empty());
        joined(&mut machine, projects[0], 1);
        // A leave frees a place.
        assert!(matches!(
            &machine.on(Input::Leave { project: projects[1], notice: None })[..],
            [Action::Unsubscribe { .. }]
        ));
        joined(&mut machine, extra, 1);
    }

    #[test]
    fn leave_then_rejoin_resumes_from_the_new_position() {
        let mut machine = Machine::new(Instant::now());
        let project = Uuid::new_v4();
        joined(&mut machine, project, 1);
        assert_eq!(sent(&machine.on(live(project, 1))), [1]);
        let notice = Some("lost access".to_string());
        let actions = machine.on(Input::Leave { project, notice });
        assert!(matches!(&actions[..], [Action::Unsubscribe { .. }, Action::Send(text)] if text == "lost access"));
        assert!(machine.on(live(project, 2)).is_empty(), "events queued before the rejoin are dropped");
        // Rejoin with since = 1: seq 2 comes from the log, the stale live copy is a duplicate.
        let Some(Action::Fill(fill)) = machine.on(join(project, 2)).into_iter().last() else { panic!("no fill") };
        assert_eq!(sent(&machine.on(Input::Filled { fill, frames: Ok(vec![frame(2), frame(3)]) })), [2, 3]);
        assert!(machine.on(live(project, 2)).is_empty());
        assert_eq!(sent(&machine.on(live(project, 4))), [4]);
    }

    #[test]
    fn shutdown_closes_with_1012_and_the_first_close_wins() {
        let mut machine = Machine::new(Instant::now());
        let actions = machine.on(Input::Shutdown);
        assert!(matches!(&actions[..], [Action::Close { code: 1012, reason: "hub restarting: reconnect with since" }]));
        assert!(machine.on(Input::Close(close::NORMAL, "")).is_empty());
        assert!(machine.on(Input::Text("late".into())).is_empty());
    }

    #[test]
    fn an_overflowing_outbox_closes_with_4008() {
        let mut machine = Machine::new(Instant::now());
        let actions = machine.on(Input::Overflowed);
        assert!(matches!(&actions[..], [Action::Close { code: close::SLOW_CONSUMER, reason: SLOW_CONSUMER_REASON }]));
    }

    #[test]
    fn pings_every_20_s_and_drops_a_peer_silent_for_60_s() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut machine = Machine::new(start);
        assert_eq!(machine.deadline(start), at(20));
        assert!(machine.on(Input::Tick { now: at(19), heard: start }).is_empty());
        assert!(matches!(&machine.on(Input::Tick { now: at(20), heard: start })[..], [Action::Ping]));
        assert_eq!(machine.deadline(start), at(40));
        // Heard from at 30 s: not idle at 60 s, but at 90 s.
        assert!(matches!(&machine.on(Input::Tick { now: at(40), heard: at(30) })[..], [Action::Ping]));
        assert_eq!(machine.deadline(at(30)), at(60));
        assert!(matches!(&machine.on(Input::Tick { now: at(60), heard: at(30) })[..], [Action::Ping]));
        assert_eq!(machine.deadline(at(30)), at(80));
        assert!(matches!(&machine.on(Input::Tick { now: at(80), heard: at(30) })[..], [Action::Ping]));
        assert_eq!(machine.deadline(at(30)), at(90));
        let actions = machine.on(Input::Tick { now: at(90), heard: at(30) });
        assert!(matches!(&actions[..], [Action::Close { code: close::GOING_AWAY, reason: "idle" }]));
    }

    mod contiguity {
        use std::collections::{BTreeMap, VecDeque};

        use proptest::prelude::*;

        use super::*;

        /// Seqs in each project's log.
        const LOG_LEN: i64 = 12;

        #[derive(Debug, Clone)]
        enum Step {
            /// A live event of project `p` (any seq: early, late, repeated, out of order).
            Live(usize, i64),
            /// A join of project `p` with `since`.
            Join(usize, Option<i64>),
            Leave(usize),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                6 => (0..2usize, 1..=LOG_LEN).prop_map(|(p, seq)| Step::Live(p, seq)),
                1 => (0..2usize, proptest::option::of(0..=LOG_LEN)).prop_map(|(p, since)| Step::Join(p, since)),
                1 => (0..2usize).prop_map(Step::Leave),
            ]
        }

        /// Runs the machine as the driver does, answering fills from complete logs, and
        /// checks every event it sends against the channel's position.
        fn run(steps: &[Step]) -> Result<(), TestCaseError> {
            let projects = [Uuid::new_v4(), Uuid::new_v4()];
            let logs: Vec<Arc<EventFrame>> = (1..=LOG_LEN).map(frame).collect();
            let mut machine = Machine::new(Instant::now());
            // What the client saw: per project, the next seq it expects (None: not joined).
            let mut client: BTreeMap<Uuid, Option<i64>> = projects.iter().map(|p| (*p, None)).collect();
            let drive = |machine: &mut Machine, client: &mut BTreeMap<Uuid, Option<i64>>, input: Input| {
                let mut pending: VecDeque<Action> = machine.on(input).into();
                while let Some(action) = pending.pop_front() {
                    let answer = match action {
                        Action::SendEvent { project, frame, .. } => {
                            let expected = client[&project];
                            prop_assert_eq!(Some(frame.seq), expected, "channel {} not contiguous", project);
                            client.insert(project, Some(frame.seq + 1));
                            None
                        }
                        Action::Fill(fill) => {
                            let page = logs.iter().filter(|f| f.seq > fill.after).take(FILL_PAGE).cloned().collect();
                            Some(Input::Filled { fill, frames: Ok(page) })
                        }
                        Action::FindOldest(fill) => Some(Input::Oldest { fill, oldest: 1 }),
                        Action::Close { .. } => return Err(TestCaseError::fail("closed")),
                        Action::Send(_)
                        | Action::SendShared(_)
                        | Action::Ping
                        | Action::Subscribe { .. }
                        | Action::Unsubscribe { .. } => None,
                    };
                    if let Some(answer) = answer {
                        for action in machine.on(answer).into_iter().rev() {
                            pending.push_front(action);
                        }
                    }
                }
                Ok(())
            };
            for step in steps {
                match step.clone() {
                    Step::Live(p, seq) => drive(&mut machine, &mut client, live(projects[p], seq))?,
                    Step::Join(p, since) => {
                        // The log is complete up to LOG_LEN: a join without since starts at its head.
                        let next_seq = since.map_or(LOG_LEN + 1, |s| s + 1);
                        client.insert(projects[p], Some(next_seq));
                        drive(&mut machine, &mut client, join(projects[p], next_seq))?;
                    }
                    Step::Leave(p) => {
                        client.insert(projects[p], None);
                        drive(&mut machine, &mut client, Input::Leave { project: projects[p], notice: None })?;
                    }
                }
            }
            // Once the last event arrives live, every joined channel has everything.
            for project in projects {
                drive(&mut machine, &mut client, Input::Live { project, frame: frame(LOG_LEN) })?;
                if let Some(next) = client[&project] {
                    prop_assert_eq!(next, LOG_LEN + 1, "channel {} incomplete", project);
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn every_channel_the_client_sees_is_seq_contiguous(steps in proptest::collection::vec(step(), 0..60)) {
                run(&steps)?;
            }
        }
    }
}
