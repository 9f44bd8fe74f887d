//! Revocation, the dev command and its signals, token refresh in place.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_stops_the_agent_within_two_seconds() {
    let world = World::start().await;
    let project = seeded_project(&world, 5).await;
    let session = world.session(&project).await;
    let mut agent = world.start_agent(&session, &[]).await;
    agent.wait_ready().await;

    let revoked_at = Instant::now();
    let (status, body) = world
        .call(reqwest::Method::DELETE, &format!("/v1/sessions/{}", agent.session_id), &world.service_token(), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let exit = agent.exit_within(Duration::from_secs(2)).await;
    assert!(revoked_at.elapsed() < Duration::from_secs(2));
    assert_eq!(exit.code(), Some(3), "{}", agent.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_starts_after_hydration_and_its_status_is_the_agents() {
    let world = World::start().await;
    let project = world.create_project().await;
    world.put(&project, "index.html", "<h1>hi</h1>").await;
    let session = world.session(&project).await;
    // The command checks it runs in the hydrated tree, then exits 7.
    let mut agent = world.start_agent(&session, &["sh", "-c", "test -f index.html || exit 1; exit 7"]).await;
    let exit = agent.exit_within(CONVERGE_WITHIN).await;
    assert_eq!(exit.code(), Some(7), "{}", agent.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_forwarded_to_the_command() {
    let world = World::start().await;
    let project = world.create_project().await;
    world.put(&project, "a.txt", "a").await;
    let session = world.session(&project).await;
    let script = "trap 'exit 5' TERM; touch .started; while true; do sleep 0.05; done";
    let mut agent = world.start_agent(&session, &["sh", "-c", script]).await;
    let deadline = Instant::now() + CONVERGE_WITHIN;
    while !world.project_dir().join(".started").exists() {
        assert!(Instant::now() < deadline, "the command never started\n{}", agent.log_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = rustix::process::Pid::from_raw(agent.child.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let exit = agent.exit_within(CONVERGE_WITHIN).await;
    assert_eq!(exit.code(), Some(5), "{}", agent.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_refreshed_in_place_before_it_expires() {
    let world = World::start().await;
    let project = world.create_project().await;
    world.put(&project, "a.txt", "a").await;
    let (status, session) = world
        .call(
            reqwest::Method::POST,
            &format!("/v1/projects/{project}/sessions"),
            &world.service_token(),
            Some(json!({"ttl_seconds": 10})),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let agent = world.start_agent(&session, &[]).await;
    agent.wait_ready().await;
    // Past the first token's expiry: without an in-place refresh the hub closes with 4009.
    tokio::time::sleep(Duration::from_secs(13)).await;
    world.put(&project, "b.txt", "after expiry").await;
    converge(&world, &project, &agent, &[]).await;
    let log = agent.log_without_secrets(&session, &["after expiry"]);
    assert!(log.contains("token refreshed"), "{log}");
    assert!(!log.contains("disconnected"), "the socket was not replaced: {log}");
    assert_eq!(agent.status().await["connected"], true);
}

/// Presence (CONTRACT section 12): an editor sees the preview attached, listed as a
/// container with its session id, without the application doing anything; it leaves when
/// the agent goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_is_present_as_a_container_while_it_runs() {
    let world = World::start().await;
    let project = seeded_project(&world, 2).await;
    let mut editor = helpers::Ws::connect(world.hub.addr(), Some(&user_token(USER)), None, "").await.unwrap();
    editor.join(&project, None).await;
    editor.send(json!({"type": "presence", "channel": helpers::channel(&project), "meta": {"file": "a.ts"}})).await;
    let session = world.session(&project).await;
    let session_id = session["session_id"].as_str().unwrap().to_owned();
    let mut agent = world.start_agent(&session, &[]).await;
    agent.wait_ready().await;

    // Reads presence frames until the container is listed (present) or gone (!present).
    let mut container: Option<Value> = None;
    let mut wait_for = async |present: bool| {
        let deadline = Instant::now() + CONVERGE_WITHIN;
        while container.is_some() != present {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = editor.next(left).await.unwrap_or_else(|code| panic!("editor socket ended: {code:?}"));
            let (joins, leaves) = match frame["type"].as_str() {
                Some("presence_state") => (frame["members"].clone(), json!([])),
                Some("presence_diff") => (frame["joins"].clone(), frame["leaves"].clone()),
                _ => continue,
            };
            let ours = |m: &&Value| m["user"] == session_id.as_str();
            if leaves.as_array().unwrap().iter().any(|m| ours(&m)) {
                container = None;
            }
            if let Some(m) = joins.as_array().unwrap().iter().find(ours) {
                container = Some(m.clone());
            }
        }
        container.clone()
    };
    let listed = wait_for(true).await.unwrap();
    assert_eq!(listed["kind"], "container", "{listed}");
    assert_eq!(listed["meta"]["agent"], "synchub-agent");

    world.call(reqwest::Method::DELETE, &format!("/v1/sessions/{session_id}"), &world.service_token(), None).await;
    agent.exit_within(Duration::from_secs(5)).await;
    assert!(wait_for(false).await.is_none(), "the container left when its agent went");
}
