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
