//! synchub-agent's core, without the network: the frames it exchanges with the hub
//! ([`protocol`]), the confined project tree it writes ([`tree`]), and the state machine
//! that applies events in `seq` order and paces `applied` frames ([`applier`]).
//!
//! A driving task keeps one [`tree::ProjectTree`] and one [`applier::Applier`]; on each
//! `event` frame it calls [`applier::Applier::handle_event`] (inside `spawn_blocking`, the
//! tree is blocking), rehydrates on [`applier::Outcome::Gap`] or `resync_required` with
//! [`tree::ProjectTree::reconcile`] + [`applier::Applier::rebase`], and sends an `applied`
//! frame whenever [`applier::Applier::applied_frame_due`] says so, after
//! [`tree::ProjectTree::save_state`].

pub mod applier;
pub mod protocol;
pub mod tree;

pub use applier::{Admission, Applier, ApplyError, ChangeTarget, Outcome};
pub use protocol::{Change, ClientFrame, EventFrame, ServerFrame};
pub use tree::{ApplyReport, ManifestEntry, ProjectTree, TreeError, TreeOptions};
