//! Realtime: server-authored, ordered, gap-free, resumable events over WebSockets.
//!
//! - [`broker`]: one feed per project with local subscribers. A feed reads new events from
//!   the log (the truth) when woken and hands each serialized frame to every subscriber's
//!   byte-capped [`outbox::Outbox`].
//! - [`wakeups`]: who wakes feeds: this hub's own commits (in-process, at once), other hubs
//!   (LISTEN/NOTIFY after commit, never inside the write transaction), and a periodic heads
//!   check that catches everything else (direct SQL writes, lost notifications).
//! - [`interest`]: which projects other hubs subscribe to, so that writes ship their events
//!   with the announcement instead of leaving those hubs to read the log.
//! - [`socket`]: the WebSocket session: auth, joins, writes; its writer drives a
//!   [`machine::Machine`] that owns channel positions and fills any gap from the log, so
//!   what a client receives per channel is always seq-contiguous.
//! - [`machine`]: that sending side as a transport-free state machine (`on(input) ->
//!   actions`): positions, de-duplication, gap fills, retention holes, channel limits,
//!   pings, idle peers and close codes.
//! - [`lane`]: a feed writes an event straight to a socket whose writer is parked with
//!   nothing queued (one `send(2)` of bytes framed once), exactly when the writer would have
//!   written it next.
//! - [`deltas`]: the recent file contents a feed keeps to send `file:update` as a Fossil
//!   delta to sockets that saw its base (CONTRACT section 12).
//! - [`presence`]: who has a channel open, on every hub (ephemeral: NOTIFY between hubs,
//!   never the log).

pub mod broker;
pub mod channel_map;
pub mod deltas;
pub mod halves;
pub mod interest;
pub mod lane;
pub mod machine;
pub mod outbox;
pub mod presence;
pub mod protocol;
pub mod socket;
pub mod wakeups;

pub use broker::Broker;
