//! Who may do what: one pure function from (principal, need, scope) to an [`Actor`] or
//! the contract's refusal. Every route declares its [`Need`] in `router.rs` and runs only
//! with this decision; the socket asks the same function for its joins and writes.
//!
//! For hub tokens (service, container) this is the only check: their SQL then runs under
//! the service marking, which the database treats as owner. Users are decided here too,
//! and their role in the project is then checked by SQL.

use uuid::Uuid;

use super::Principal;
use crate::error::ApiError;

/// The kinds of caller, as the policy tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Service,
    Container,
}

impl Principal {
    pub fn kind(&self) -> Kind {
        match self {
            Principal::User { .. } => Kind::User,
            Principal::Service => Kind::Service,
            Principal::Container { .. } => Kind::Container,
        }
    }
}

/// What a route (or socket frame) needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A user acting for themselves, on no project: list and create projects.
    Account,
    /// A member of the project (role checked in SQL): the project, its members, the
    /// caller's editor state, the project's archive (a download for people: the
    /// orchestrator and containers have snapshots). Only users are members; to hub tokens
    /// the project is not there.
    Membership,
    /// Read the project's files, events and changes, and join its channel.
    Read,
    /// Write the project's files (PUT, PATCH with a delta, DELETE, bulk, move, socket writes):
    /// users only (editor role, checked in SQL).
    Write,
    /// Record the project's repository base: users (owner, checked in SQL) or the orchestrator.
    SetBase,
    /// Orchestrator work on a project: sessions, snapshots, container tokens.
    Orchestrate,
    /// The project's latest snapshot: the orchestrator or the project's own containers.
    Snapshot,
    /// Revoke a session: the orchestrator.
    Revoke,
    /// Has a session's preview caught up: members (checked in SQL), the orchestrator, or the
    /// session's own container.
    SessionProgress,
    /// A fresh container token: the container itself.
    Refresh,
}

impl Need {
    pub const ALL: [Need; 10] = [
        Need::Account,
        Need::Membership,
        Need::Read,
        Need::Write,
        Need::SetBase,
        Need::Orchestrate,
        Need::Snapshot,
        Need::Revoke,
        Need::SessionProgress,
        Need::Refresh,
    ];

    /// The kinds of caller this need admits (within their scope).
    pub fn admits(self) -> &'static [Kind] {
        use Kind::*;
        match self {
            Need::Account | Need::Membership | Need::Write => &[User],
            Need::Read | Need::SessionProgress => &[User, Service, Container],
            Need::SetBase => &[User, Service],
            Need::Orchestrate | Need::Revoke => &[Service],
            Need::Snapshot => &[Service, Container],
            Need::Refresh => &[Container],
        }
    }

    /// What the route's `{id}` names, if anything.
    pub fn scope(self) -> ScopeKind {
        match self {
            Need::Account | Need::Refresh => ScopeKind::None,
            Need::Revoke | Need::SessionProgress => ScopeKind::Session,
            _ => ScopeKind::Project,
        }
    }

    /// The answer to a caller this need does not admit, though it is within its scope.
    fn refusal(self) -> ApiError {
        let forbidden = |message: &str| ApiError::Forbidden(message.into());
        match self {
            // A project is there only for those who may read it (Read and SessionProgress
            // admit every kind: they never get here).
            Need::Membership | Need::Read | Need::SessionProgress => project_not_found(),
            Need::Account => forbidden("this route needs a user token"),
            Need::Write | Need::SetBase => forbidden("this token is read-only"),
            Need::Orchestrate | Need::Snapshot | Need::Revoke => forbidden("this route needs a service token"),
            Need::Refresh => forbidden("this route needs a container token"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    None,
    Project,
    Session,
}

impl ScopeKind {
    /// The scope a URL id names. An id that is not a UUID names nothing: 404.
    pub fn parse(self, raw: Option<&str>) -> Result<Scope, ApiError> {
        let id = || raw.and_then(|raw| Uuid::parse_str(raw).ok());
        match self {
            ScopeKind::None => Ok(Scope::None),
            ScopeKind::Project => id().map(Scope::Project).ok_or_else(project_not_found),
            ScopeKind::Session => id().map(Scope::Session).ok_or_else(session_not_found),
        }
    }
}

/// What a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    None,
    Project(Uuid),
    Session(Uuid),
}

impl Scope {
    fn not_found(self) -> ApiError {
        match self {
            Scope::Session(_) => session_not_found(),
            _ => project_not_found(),
        }
    }
}

fn project_not_found() -> ApiError {
    ApiError::NotFound("project not found".into())
}

fn session_not_found() -> ApiError {
    ApiError::NotFound("session not found".into())
}

impl Principal {
    /// A container token is bound to one project and one session; other callers are not
    /// bound (users are checked by SQL, the orchestrator acts on any project).
    fn within(&self, scope: Scope) -> bool {
        match (self, scope) {
            (Principal::Container { project_id, .. }, Scope::Project(project)) => *project_id == project,
            (Principal::Container { session_id, .. }, Scope::Session(session)) => *session_id == session,
            _ => true,
        }
    }
}

/// The policy: a caller outside its scope learns nothing (404, never 403); within it, the
/// need admits its kind or refuses it.
pub fn decide(principal: &Principal, need: Need, scope: Scope) -> Result<Actor, ApiError> {
    if !principal.within(scope) {
        return Err(scope.not_found());
    }
    if !need.admits().contains(&principal.kind()) {
        return Err(need.refusal());
    }
    Ok(Actor { principal: principal.clone(), scope })
}

/// The service marking's principal: what SQL runs as for hub tokens.
static SERVICE_MARKING: Principal = Principal::Service;

/// A caller the policy admitted for one scope. Only [`decide`] makes one, so a handler that
/// takes an `Actor` cannot run without the decision.
#[derive(Debug, Clone)]
pub struct Actor {
    principal: Principal,
    scope: Scope,
}

impl Actor {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Recorded as author; for users, whose role SQL checks.
    pub fn name(&self) -> String {
        self.principal.actor()
    }

    /// How SQL sees the call: a user as themselves (SQL checks their role), hub tokens
    /// under the service marking (this policy already decided for them).
    pub fn db(&self) -> &Principal {
        match self.principal {
            Principal::User { .. } => &self.principal,
            _ => &SERVICE_MARKING,
        }
    }

    pub fn rate_key(&self) -> String {
        self.principal.rate_key()
    }

    /// The project decided for; an internal error on a route whose need has no project.
    pub fn project(&self) -> Result<Uuid, ApiError> {
        match self.scope {
            Scope::Project(project) => Ok(project),
            _ => Err(ApiError::internal("the decision names no project")),
        }
    }

    /// The session decided for; an internal error on a route whose need has no session.
    pub fn session(&self) -> Result<Uuid, ApiError> {
        match self.scope {
            Scope::Session(session) => Ok(session),
            _ => Err(ApiError::internal("the decision names no session")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN_PROJECT: Uuid = Uuid::from_u128(1);
    const OTHER_PROJECT: Uuid = Uuid::from_u128(2);
    const OWN_SESSION: Uuid = Uuid::from_u128(3);
    const OTHER_SESSION: Uuid = Uuid::from_u128(4);

    /// Whether the request's id is the one in a container token (for users and the
    /// service the two columns must agree: they are not bound to a project).
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Id {
        Same,
        Other,
    }

    /// What the policy answers: admitted (and how SQL then sees the call), or the error.
    #[derive(Debug, PartialEq)]
    enum Expect {
        /// Admitted; SQL runs as the user.
        AsUser,
        /// Admitted; SQL runs under the service marking.
        Marked,
        /// Refused with this status, code and message.
        Refused(u16, &'static str, &'static str),
    }
    use Expect::*;

    const READ_ONLY: Expect = Refused(403, "forbidden", "this token is read-only");
    const NEEDS_USER: Expect = Refused(403, "forbidden", "this route needs a user token");
    const NEEDS_SERVICE: Expect = Refused(403, "forbidden", "this route needs a service token");
    const NEEDS_CONTAINER: Expect = Refused(403, "forbidden", "this route needs a container token");
    const NO_PROJECT: Expect = Refused(404, "not_found", "project not found");
    const NO_SESSION: Expect = Refused(404, "not_found", "session not found");

    /// Every need × principal kind × same/other id, with the contract's answer.
    const TABLE: &[(Need, Kind, Id, Expect)] = {
        use Id::*;
        use Kind::*;
        use Need::*;
        &[
            (Account, User, Same, AsUser),
            (Account, User, Other, AsUser),
            (Account, Service, Same, NEEDS_USER),
            (Account, Service, Other, NEEDS_USER),
            (Account, Container, Same, NEEDS_USER),
            (Account, Container, Other, NEEDS_USER),
            (Membership, User, Same, AsUser),
            (Membership, User, Other, AsUser),
            (Membership, Service, Same, NO_PROJECT),
            (Membership, Service, Other, NO_PROJECT),
            (Membership, Container, Same, NO_PROJECT),
            (Membership, Container, Other, NO_PROJECT),
            (Read, User, Same, AsUser),
            (Read, User, Other, AsUser),
            (Read, Service, Same, Marked),
            (Read, Service, Other, Marked),
            (Read, Container, Same, Marked),
            (Read, Container, Other, NO_PROJECT),
            (Write, User, Same, AsUser),
            (Write, User, Other, AsUser),
            (Write, Service, Same, READ_ONLY),
            (Write, Service, Other, READ_ONLY),
            (Write, Container, Same, READ_ONLY),
            (Write, Container, Other, NO_PROJECT),
            (SetBase, User, Same, AsUser),
            (SetBase, User, Other, AsUser),
            (SetBase, Service, Same, Marked),
            (SetBase, Service, Other, Marked),
            (SetBase, Container, Same, READ_ONLY),
            (SetBase, Container, Other, NO_PROJECT),
            (Orchestrate, User, Same, NEEDS_SERVICE),
            (Orchestrate, User, Other, NEEDS_SERVICE),
            (Orchestrate, Service, Same, Marked),
            (Orchestrate, Service, Other, Marked),
            (Orchestrate, Container, Same, NEEDS_SERVICE),
            (Orchestrate, Container, Other, NO_PROJECT),
            (Snapshot, User, Same, NEEDS_SERVICE),
            (Snapshot, User, Other, NEEDS_SERVICE),
            (Snapshot, Service, Same, Marked),
            (Snapshot, Service, Other, Marked),
            (Snapshot, Container, Same, Marked),
            (Snapshot, Container, Other, NO_PROJECT),
            (Revoke, User, Same, NEEDS_SERVICE),
            (Revoke, User, Other, NEEDS_SERVICE),
            (Revoke, Service, Same, Marked),
            (Revoke, Service, Other, Marked),
            (Revoke, Container, Same, NEEDS_SERVICE),
            (Revoke, Container, Other, NO_SESSION),
            (SessionProgress, User, Same, AsUser),
            (SessionProgress, User, Other, AsUser),
            (SessionProgress, Service, Same, Marked),
            (SessionProgress, Service, Other, Marked),
            (SessionProgress, Container, Same, Marked),
            (SessionProgress, Container, Other, NO_SESSION),
            (Refresh, User, Same, NEEDS_CONTAINER),
            (Refresh, User, Other, NEEDS_CONTAINER),
            (Refresh, Service, Same, NEEDS_CONTAINER),
            (Refresh, Service, Other, NEEDS_CONTAINER),
            (Refresh, Container, Same, Marked),
            (Refresh, Container, Other, Marked),
        ]
    };

    fn principal(kind: Kind) -> Principal {
        match kind {
            Kind::User => Principal::User { sub: "alice".into() },
            Kind::Service => Principal::Service,
            Kind::Container => Principal::Container { session_id: OWN_SESSION, project_id: OWN_PROJECT },
        }
    }

    fn scope(need: Need, id: Id) -> Scope {
        match (need.scope(), id) {
            (ScopeKind::None, _) => Scope::None,
            (ScopeKind::Project, Id::Same) => Scope::Project(OWN_PROJECT),
            (ScopeKind::Project, Id::Other) => Scope::Project(OTHER_PROJECT),
            (ScopeKind::Session, Id::Same) => Scope::Session(OWN_SESSION),
            (ScopeKind::Session, Id::Other) => Scope::Session(OTHER_SESSION),
        }
    }

    impl Expect {
        fn text(&self) -> String {
            match self {
                AsUser => "as the user".into(),
                Marked => "under the service marking".into(),
                Refused(status, code, message) => format!("{status} {code}: {message}"),
            }
        }
    }

    fn refusal(err: &ApiError) -> String {
        format!("{} {}: {err}", err.status().as_u16(), err.code())
    }

    fn outcome(decision: &Result<Actor, ApiError>) -> String {
        match decision {
            Ok(actor) if matches!(actor.db(), Principal::User { .. }) => {
                assert_eq!(actor.db(), actor.principal(), "a user acts as themselves");
                AsUser.text()
            }
            Ok(actor) => {
                assert_eq!(actor.db(), &Principal::Service, "hub tokens run under the service marking");
                Marked.text()
            }
            Err(err) => refusal(err),
        }
    }

    #[test]
    fn every_principal_need_and_scope_gets_the_contracts_answer() {
        for need in Need::ALL {
            for kind in [Kind::User, Kind::Service, Kind::Container] {
                for id in [Id::Same, Id::Other] {
                    let rows: Vec<_> = TABLE.iter().filter(|(n, k, i, _)| (*n, *k, *i) == (need, kind, id)).collect();
                    assert_eq!(rows.len(), 1, "{need:?} × {kind:?} × {id:?}: one row in the table");
                    let expected = &rows[0].3;
                    let scope = scope(need, id);
                    let decision = decide(&principal(kind), need, scope);
                    if let Ok(actor) = &decision {
                        assert_eq!(actor.principal(), &principal(kind), "the actor is the caller");
                        assert_eq!(
                            actor.project().ok(),
                            match scope {
                                Scope::Project(project) => Some(project),
                                _ => None,
                            }
                        );
                    }
                    assert_eq!(outcome(&decision), expected.text(), "{need:?} × {kind:?} × {id:?}");
                }
            }
        }
    }

    #[test]
    fn the_admitted_kinds_are_the_tables_admissions() {
        for need in Need::ALL {
            for kind in [Kind::User, Kind::Service, Kind::Container] {
                let admitted = TABLE
                    .iter()
                    .any(|(n, k, i, e)| (*n, *k, *i) == (need, kind, Id::Same) && !matches!(e, Refused(..)));
                assert_eq!(need.admits().contains(&kind), admitted, "{need:?} × {kind:?}");
            }
        }
    }

    #[test]
    fn an_id_that_is_not_a_uuid_names_nothing() {
        assert_eq!(ScopeKind::None.parse(None).unwrap(), Scope::None);
        assert_eq!(ScopeKind::Project.parse(Some(&OWN_PROJECT.to_string())).unwrap(), Scope::Project(OWN_PROJECT));
        assert_eq!(ScopeKind::Session.parse(Some(&OWN_SESSION.to_string())).unwrap(), Scope::Session(OWN_SESSION));
        for raw in [None, Some(""), Some("nope"), Some("../x")] {
            assert_eq!(refusal(&ScopeKind::Project.parse(raw).unwrap_err()), NO_PROJECT.text());
            assert_eq!(refusal(&ScopeKind::Session.parse(raw).unwrap_err()), NO_SESSION.text());
        }
    }
}
