//! Presence (CONTRACT section 12) against real hubs on one database: state then diffs,
//! across hubs, members of a killed hub expiring, the limits, identities from tokens, and
//! that presence never writes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::helpers::*;
use crate::hub_process::HubProcess;

/// Short heartbeats and expiry, so a dead hub's members leave within seconds.
const HEARTBEAT_MS: u64 = 200;
const TTL_MS: u64 = 1000;
/// Every wait for presence is bounded by this.
const WITHIN: Duration = Duration::from_secs(10);

fn short_timing(config: &mut synchub::Config) {
    config.presence.presence_heartbeat_ms = HEARTBEAT_MS;
    config.presence.presence_ttl_ms = TTL_MS;
}

async fn second_hub(first: &TestApp) -> TestApp {
    let mut config = test_config(first.database_url.clone());
    short_timing(&mut config);
    TestApp::spawn_on(config).await
}

/// What one socket knows of a channel's presence, built from the frames it received.
#[derive(Default, Debug)]
struct View {
    me: Option<String>,
    members: BTreeMap<String, Value>,
    states: usize,
    /// Diffs received, and how many of them named each client (in joins or leaves).
    diffs: usize,
    diffs_naming: BTreeMap<String, usize>,
    events: Vec<Value>,
    errors: Vec<Value>,
}

impl View {
    fn apply(&mut self, frame: Value) {
        match frame["type"].as_str() {
            Some("presence_state") => {
                assert_eq!(self.diffs, 0, "presence_state comes before any diff: {frame}");
                self.states += 1;
                self.me = frame["client_id"].as_str().map(str::to_string);
                self.members = members(&frame["members"]);
            }
            Some("presence_diff") => {
                assert_eq!(self.states, 1, "a diff before the state: {frame}");
                self.diffs += 1;
                for leave in frame["leaves"].as_array().unwrap() {
                    let id = leave["client_id"].as_str().unwrap().to_string();
                    self.members.remove(&id);
                    *self.diffs_naming.entry(id).or_default() += 1;
                }
                for (id, member) in members(&frame["joins"]) {
                    *self.diffs_naming.entry(id.clone()).or_default() += 1;
                    self.members.insert(id, member);
                }
            }
            Some("event") => self.events.push(frame),
            Some("error") => self.errors.push(frame),
            _ => {}
        }
    }

    fn users(&self) -> Vec<(String, String)> {
        let mut users: Vec<_> = self
            .members
            .values()
            .map(|m| (m["user"].as_str().unwrap().to_string(), m["kind"].as_str().unwrap().to_string()))
            .collect();
        users.sort();
        users
    }

    fn by_user(&self, user: &str) -> Option<&Value> {
        self.members.values().find(|m| m["user"] == user)
    }
}

fn members(list: &Value) -> BTreeMap<String, Value> {
    list.as_array().unwrap().iter().map(|m| (m["client_id"].as_str().unwrap().to_string(), m.clone())).collect()
}

/// A socket on `project` that keeps its presence view.
struct Client {
    ws: Ws,
    view: View,
    /// When it last sent `presence` (the hub takes one per 100 ms).
    sent_at: Instant,
}

impl Client {
    async fn join(app_addr: std::net::SocketAddr, token: &str, project: &str) -> Client {
        let mut ws = Ws::connect(app_addr, Some(token), None, "").await.expect("upgrade");
        ws.join(project, None).await;
        // The first presence frame makes the socket a member (opt-in).
        ws.send(json!({"type": "presence", "channel": channel(project), "meta": null})).await;
        let mut client = Client { ws, view: View::default(), sent_at: Instant::now() };
        // presence_state is the first frame after `joined` (no events were missed here).
        let state = client.ws.recv().await;
        assert_eq!(state["type"], "presence_state", "{state}");
        assert_eq!(state["channel"], channel(project));
        client.view.apply(state);
        client
    }

    /// Reads frames until `done` holds for the view (at most WITHIN).
    async fn until(&mut self, what: &str, done: impl Fn(&View) -> bool) {
        let deadline = Instant::now() + WITHIN;
        while !done(&self.view) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ws.next(left).await {
                Ok(frame) => self.view.apply(frame),
                Err(code) => panic!("waiting for {what}: socket ended ({code:?}); view {:?}", self.view),
            }
        }
    }

    /// Reads whatever arrives for `period`.
    async fn drain_for(&mut self, period: Duration) {
        let deadline = Instant::now() + period;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.ws.next(left).await {
                Ok(frame) => self.view.apply(frame),
                Err(_) => return,
            }
        }
    }

    /// Sends `presence`, 110 ms after the previous one at the earliest (within the rate).
    async fn set(&mut self, project: &str, meta: Value) {
        tokio::time::sleep_until(self.sent_at + Duration::from_millis(110)).await;
        self.sent_at = Instant::now();
        self.ws.send(json!({"type": "presence", "channel": channel(project), "meta": meta})).await;
    }
}

fn me(view: &View) -> String {
    view.me.clone().expect("presence_state names the socket's own client_id")
}

#[tokio::test]
async fn two_hubs_see_members_join_change_and_leave_on_each() {
    let first = TestApp::spawn_with(short_timing).await;
    let second = second_hub(&first).await;
    let p = first.create_project("alice", "presence").await;
    let alice = first.user_token("alice");
    for user in ["bob", "carol"] {
        let (status, _) =
            first.put(&format!("/v1/projects/{p}/members/{user}"), &alice, json!({"role": "editor"})).await;
        assert_eq!(status.as_u16(), 200);
    }

    let mut a = Client::join(first.addr, &alice, &p).await;
    let a_id = me(&a.view);
    assert_eq!(a.view.users(), [("alice".into(), "user".into())], "a member from its join");
    assert_eq!(a.view.members[&a_id]["meta"], Value::Null);

    // A socket that joins without ever sending presence is not listed and gets no presence.
    let mut silent = second.ws(&first.user_token("bob")).await;
    silent.join(&p, None).await;
    let mut b = Client::join(second.addr, &first.user_token("bob"), &p).await;
    let b_id = me(&b.view);
    assert_ne!(a_id, b_id);
    b.until("alice, from the other hub", |v| v.by_user("alice").is_some()).await;
    a.until("bob, from the other hub", |v| v.by_user("bob").is_some()).await;
    assert_eq!(a.view.members[&b_id]["kind"], "user");

    // A second member on the first hub: both hubs see it.
    let mut c = Client::join(first.addr, &first.user_token("carol"), &p).await;
    c.until("alice and bob", |v| v.users().len() == 3).await;
    b.until("carol", |v| v.by_user("carol").is_some()).await;

    silent.assert_quiet(Duration::from_millis(300)).await;
    assert_eq!(b.view.users().iter().filter(|(user, _)| user == "bob").count(), 1, "the silent socket is not listed");

    // Meta changes travel as diffs, both ways.
    a.set(&p, json!({"file": "src/a.ts", "line": 3})).await;
    b.until("alice's meta", |v| v.by_user("alice").is_some_and(|m| m["meta"]["file"] == "src/a.ts")).await;
    b.set(&p, json!({"file": "README.md"})).await;
    a.until("bob's meta", |v| v.by_user("bob").is_some_and(|m| m["meta"]["file"] == "README.md")).await;

    // A clean close leaves; a socket dropped without a close frame (a killed client) too.
    c.ws.stream.close(None).await.unwrap();
    b.until("carol's leave", |v| v.by_user("carol").is_none()).await;
    drop(b);
    a.until("bob's leave", |v| v.by_user("bob").is_none()).await;
    assert_eq!(a.view.users(), [("alice".into(), "user".into())]);

    // A leave frame leaves too; a rejoin gets a fresh state with itself in it.
    let mut d = Client::join(second.addr, &first.user_token("bob"), &p).await;
    a.until("bob again", |v| v.by_user("bob").is_some()).await;
    d.ws.send(json!({"type": "leave", "channel": channel(&p)})).await;
    a.until("bob's leave frame", |v| v.by_user("bob").is_none()).await;
    assert_eq!(a.view.states, 1, "presence_state once per join");
}

#[tokio::test]
async fn a_killed_hub_s_members_leave_everywhere_within_the_ttl() {
    let watcher_hub = TestApp::spawn_with(short_timing).await;
    let p = watcher_hub.create_project("alice", "killed").await;
    let killed = HubProcess::start_with(&watcher_hub.database_url, |command| {
        command
            .env("RUST_LOG", "warn")
            .env("SYNCHUB_PRESENCE_HEARTBEAT_MS", HEARTBEAT_MS.to_string())
            .env("SYNCHUB_PRESENCE_TTL_MS", TTL_MS.to_string())
            .stderr(std::process::Stdio::null());
    })
    .await;
    let alice = watcher_hub.user_token("alice");
    let mut watcher = Client::join(watcher_hub.addr, &alice, &p).await;
    let mut doomed = Vec::new();
    for _ in 0..3 {
        doomed.push(Client::join(killed.addr, &alice, &p).await);
    }
    watcher.until("the killed hub's members", |v| v.members.len() == 4).await;
    // Members on the doomed hub see the watcher too (state from the heartbeats/hello).
    doomed[0].until("the watcher", |v| v.members.len() == 4).await;

    drop(killed); // SIGKILL: no leave is ever announced
    let killed_at = Instant::now();
    watcher.until("the killed hub's members to expire", |v| v.members.len() == 1).await;
    // Within the ttl plus heartbeat and flush slack (the bound is WITHIN; this is a sanity
    // check that expiry, not some 60 s timeout, removed them).
    assert!(killed_at.elapsed() < Duration::from_millis(TTL_MS * 5), "{:?}", killed_at.elapsed());
    assert_eq!(watcher.view.members.keys().next(), watcher.view.me.as_ref());
}

#[tokio::test]
async fn a_flooding_client_is_limited_with_errors_and_nothing_else_degrades() {
    let app = TestApp::spawn_with(short_timing).await;
    let p = app.create_project("alice", "flood").await;
    let alice = app.user_token("alice");
    let mut flooder = Client::join(app.addr, &alice, &p).await;
    let mut other = Client::join(app.addr, &alice, &p).await;
    let flooder_id = me(&flooder.view);
    other.until("the flooder", |v| v.members.contains_key(&flooder_id)).await;
    other.drain_for(Duration::from_millis(300)).await;
    let diffs_before = other.view.diffs_naming.get(&flooder_id).copied().unwrap_or(0);

    // 600 updates as fast as the socket takes them (every tenth oversized), and a write.
    let started = Instant::now();
    for i in 0..600 {
        let meta = if i % 10 == 9 { json!({"pad": "x".repeat(2000)}) } else { json!({"n": i}) };
        flooder.ws.send(json!({"type": "presence", "channel": channel(&p), "meta": meta})).await;
    }
    app.write("alice", &p, "during.txt", "x").await;
    let flooded_for = started.elapsed();
    // Errors come back to the flooder; the event still reaches it, after its errors.
    flooder.until("the event", |v| !v.events.is_empty()).await;
    other.until("the event", |v| !v.events.is_empty()).await;
    flooder.drain_for(Duration::from_millis(500)).await;
    other.drain_for(Duration::from_millis(500)).await;
    let observed = started.elapsed();

    let codes: Vec<&str> = flooder.view.errors.iter().map(|e| e["error"]["code"].as_str().unwrap()).collect();
    let oversized = codes.iter().filter(|c| **c == "payload_too_large").count();
    let limited = codes.iter().filter(|c| **c == "rate_limited").count();
    assert_eq!(oversized, 60, "every oversized meta is refused: {codes:?}");
    assert!(limited >= 400, "the rate limit refused {limited} of 540 in {flooded_for:?}");
    assert!(flooder.view.errors.iter().all(|e| e["channel"] == channel(&p)));
    let message = flooder.view.errors.iter().find(|e| e["error"]["code"] == "rate_limited").unwrap();
    assert!(message["error"]["message"].as_str().unwrap().contains("10 presence updates per second"), "{message}");

    // The other member got at most 10 diffs per second naming the flooder (+1 for a
    // partial second at each end), and the last accepted meta.
    let diffs = other.view.diffs_naming.get(&flooder_id).copied().unwrap_or(0) - diffs_before;
    let bound = (observed.as_secs_f64() * 10.0).ceil() as usize + 2;
    assert!(diffs >= 1 && diffs <= bound, "{diffs} diffs in {observed:?} (bound {bound})");
    assert_eq!(flooder.view.members[&flooder_id]["meta"], other.view.members[&flooder_id]["meta"]);
    // Both sockets are still open and joined: a later write reaches both.
    app.write("alice", &p, "after.txt", "y").await;
    flooder.until("the second event", |v| v.events.len() == 2).await;
    other.until("the second event", |v| v.events.len() == 2).await;

    // A presence frame for a channel the socket did not join is refused, not taken.
    let q = app.create_project("alice", "elsewhere").await;
    flooder.set(&q, json!({"n": 1})).await;
    flooder.until("the refusal", |v| v.errors.iter().any(|e| e["channel"] == channel(&q))).await;
    let refused = flooder.view.errors.iter().find(|e| e["channel"] == channel(&q)).unwrap();
    assert_eq!(refused["error"]["code"], "invalid_request", "{refused}");
}

#[tokio::test]
async fn viewers_and_containers_are_present_as_their_tokens_say() {
    let (app, _dir) = app_with_storage().await;
    let p = app.create_project("alice", "kinds").await;
    let alice = app.user_token("alice");
    let (status, _) = app.put(&format!("/v1/projects/{p}/members/vic"), &alice, json!({"role": "viewer"})).await;
    assert_eq!(status.as_u16(), 200);
    let (status, session) = app.post(&format!("/v1/projects/{p}/sessions"), &app.service_token(), json!({})).await;
    assert_eq!(status.as_u16(), 201, "{session}");
    let container = session["token"].as_str().unwrap();
    let session_id = session["session_id"].as_str().unwrap();

    let mut editor = Client::join(app.addr, &alice, &p).await;
    let mut viewer = Client::join(app.addr, &app.user_token("vic"), &p).await;
    let mut agent = Client::join(app.addr, container, &p).await;
    let mut expected = vec![
        ("alice".to_string(), "user".to_string()),
        (session_id.to_string(), "container".to_string()),
        ("vic".to_string(), "user".to_string()),
    ];
    expected.sort();
    editor.until("viewer and container", |v| v.users() == expected).await;

    // What a client claims is only meta: user and kind stay what the token says.
    let claim = json!({"user": "alice", "kind": "container", "client_id": "x"});
    viewer.set(&p, claim.clone()).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    viewer.ws.send(json!({"type": "presence", "channel": channel(&p), "meta": {}, "user": "alice"})).await;
    agent.set(&p, json!({"user": "vic", "kind": "user"})).await;
    editor
        .until("both metas", |v| {
            v.by_user("vic").is_some_and(|m| m["meta"] == json!({}))
                && v.by_user(session_id).is_some_and(|m| m["meta"]["kind"] == "user")
        })
        .await;
    assert_eq!(editor.view.users(), expected);
    assert_eq!(editor.view.by_user(session_id).unwrap()["kind"], "container");
    agent.until("its own entry", |v| v.users() == expected).await;

    // A member removed from the project leaves presence and hears no more of it.
    let (status, _) = app.delete(&format!("/v1/projects/{p}/members/vic"), &alice).await;
    assert_eq!(status.as_u16(), 204);
    editor.until("vic's leave", |v| v.by_user("vic").is_none()).await;
    viewer.until("the not_found notice", |v| v.errors.iter().any(|e| e["error"]["code"] == "not_found")).await;
    editor.set(&p, json!({"after": "removal"})).await;
    agent.until("alice's new meta", |v| v.by_user("alice").is_some_and(|m| m["meta"]["after"] == "removal")).await;
    viewer.drain_for(Duration::from_millis(500)).await;
    assert!(viewer.view.by_user("alice").is_none_or(|m| m["meta"]["after"].is_null()), "{:?}", viewer.view);
    expected.retain(|(user, _)| user != "vic");

    // A service token (the orchestrator) may receive presence but is not a member.
    let mut service = Client::join(app.addr, &app.service_token(), &p).await;
    assert_eq!(service.view.users(), expected);
    service.drain_for(Duration::from_millis(3 * HEARTBEAT_MS)).await;
    assert_eq!(service.view.users(), expected);
}

/// Every row of every table of the schema, hashed: presence must change none of them.
async fn tables_digest(app: &TestApp) -> Vec<(String, Option<String>)> {
    let (db, conn) = tokio_postgres::connect(&app.database_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let tables = db
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'synchub' AND table_type = 'BASE TABLE' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let mut digest = Vec::new();
    for table in tables {
        let name: String = table.try_get(0).unwrap();
        let sql = format!("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM synchub.{name} t");
        let row = db.query_one(&sql, &[]).await.unwrap();
        digest.push((name, row.try_get(0).unwrap()));
    }
    digest
}

#[tokio::test]
async fn presence_never_writes() {
    let app = TestApp::spawn_with(short_timing).await;
    let p = app.create_project("alice", "ephemeral").await;
    app.write("alice", &p, "a.txt", "a").await;
    let before = tables_digest(&app).await;
    let alice = app.user_token("alice");
    let mut a = Client::join(app.addr, &alice, &p).await;
    let mut b = Client::join(app.addr, &alice, &p).await;
    for i in 0..5 {
        a.set(&p, json!({"n": i})).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    b.until("a's last meta", |v| v.members.values().any(|m| m["meta"]["n"] == 4)).await;
    drop(a);
    b.until("a's leave", |v| v.members.len() == 1).await;
    assert_eq!(tables_digest(&app).await, before, "no row changed");
    // The log did not move: a write gets the next seq.
    let written = app.write("alice", &p, "b.txt", "b").await;
    assert_eq!(written["seq"], 2);
    assert!(b.view.events.is_empty(), "presence is never an event");
}
