//! synchub-agent. The core, without the network: the frames it exchanges with the hub
//! ([`protocol`]), the confined project tree it writes ([`tree`]), and the state machine
//! that applies events in `seq` order and paces `applied` frames ([`applier`]).
//!
//! A driving task keeps one [`tree::ProjectTree`] and one [`applier::Applier`]; on each
//! `event` frame it calls [`applier::Applier::handle_event`] (inside `spawn_blocking`, the
//! tree is blocking), rehydrates on [`applier::Outcome::Gap`] or `resync_required` with
//! [`tree::ProjectTree::hydrate_from`] + [`applier::Applier::rebase`], and sends an `applied`
//! frame whenever [`applier::Applier::applied_frame_due`] says so, after
//! [`tree::ProjectTree::save_state`]. That driving task is [`session::Session`]; around it,
//! [`hydrate`] (snapshot download, then verify and write in one pass), [`hub`] (HTTP: latest
//! snapshot, token refresh, blob reads), [`blobs`] (binary files' bytes, fetched and
//! verified before the change that names them is applied), [`health`] (`--health-addr`) and [`command`] (the dev server).
//! Reconnect delays come from [`synchub_protocol::Backoff`], shared with the hub, cut short
//! by a cheap TCP probe ([`reconnect`]).

pub mod applier;
pub mod blobs;
pub mod command;
pub mod health;
pub mod hub;
pub mod hydrate;
pub mod protocol;
pub mod reconnect;
pub mod session;
pub mod tree;

pub use applier::{Admission, Applier, ApplyError, ChangeTarget, Outcome};
pub use protocol::{Change, ClientFrame, EventFrame, ServerFrame};
pub use tree::{ApplyReport, ProjectTree, TreeError, TreeOptions};
