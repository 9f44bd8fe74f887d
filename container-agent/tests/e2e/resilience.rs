//! The hub killed and restarted, the network cut, a gap in the log: nothing is lost.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_killed_and_restarted_while_edits_continue_loses_nothing() {
    let mut world = World::start().await;
    let project = seeded_project(&world, 400).await;
    let session = world.session(&project).await;
    let agent = world.start_agent(&session, &[]).await;
    agent.wait_ready().await;

    mixed_edits(&world, &project, 0).await;
    world.restart_hub(Duration::from_millis(500)).await;
    // Edits continue through the new hub while the agent is still reconnecting.
    for i in 0..50 {
        world.put(&project, &format!("after/k{i}.txt"), &format!("{i}")).await;
    }
    converge(&world, &project, &agent, &[]).await;
    caught_up(&world, &agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_network_cut_heals() {
    let world = World::start().await;
    let project = seeded_project(&world, 50).await;
    let session = world.session(&project).await;
    let agent = world.start_agent(&session, &[]).await;
    agent.wait_ready().await;

    world.proxy.cut();
    let cut_at = Instant::now();
    // Writes go straight to the hub while the agent's path is cut.
    let direct = reqwest::Client::new();
    for i in 0..40 {
        let response = direct
            .put(format!("{}/v1/projects/{project}/files/cut/c{i}.txt", world.hub.direct))
            .bearer_auth(user_token(USER))
            .json(&json!({"content": format!("{i}")}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    let deadline = Instant::now() + CONVERGE_WITHIN;
    while agent.get("/readyz").await.is_some_and(|(code, _)| code == 200) {
        assert!(Instant::now() < deadline, "the agent never noticed the cut");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(cut_at.elapsed())).await;
    world.proxy.restore();
    converge(&world, &project, &agent, &[]).await;
    agent.wait_ready().await;
    caught_up(&world, &agent).await;
}

/// With every backoff step 15–30 s long (`SYNCHUB_RECONNECT_MAX_MS`), only the probe made
/// while backing off can bring the agent back within seconds of the heal: without it the
/// first attempt after the cut comes 15 s or more later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_network_is_noticed_by_probing_not_by_waiting_out_the_backoff() {
    let world = World::start().await;
    let project = seeded_project(&world, 10).await;
    let mut session = world.session(&project).await;
    session["env"]["SYNCHUB_RECONNECT_MAX_MS"] = json!("30000");
    let agent = world.start_agent(&session, &[]).await;
    agent.wait_ready().await;

    world.proxy.cut();
    let deadline = Instant::now() + CONVERGE_WITHIN;
    while agent.get("/readyz").await.is_some_and(|(code, _)| code == 200) {
        assert!(Instant::now() < deadline, "the agent never noticed the cut");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One file edited again and again while cut off: the replayed backlog ends in its last
    // content (applied coalesced, see the applier's tests).
    for i in 0..30 {
        world.hub_put_direct(&project, "cut/while-away.txt", &format!("edit {i}")).await;
    }
    // Long enough for probes to fail against the cut proxy (it accepts, then closes).
    tokio::time::sleep(Duration::from_secs(2)).await;
    world.proxy.restore();
    let healed_at = Instant::now();
    // Far inside the 15 s the shortest step would still have to run.
    let within = healed_at + Duration::from_secs(5);
    while agent.get("/readyz").await.is_none_or(|(code, _)| code != 200) {
        assert!(
            Instant::now() < within,
            "not back 5 s after the heal: the backoff step was waited out\n{}",
            agent.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    converge(&world, &project, &agent, &[]).await;
    let edited = std::fs::read_to_string(world.project_dir().join("cut/while-away.txt")).unwrap();
    assert_eq!(edited, "edit 29");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_log_makes_the_agent_rehydrate() {
    let world = World::start().await;
    let project = seeded_project(&world, 60).await;
    let session = world.session(&project).await;
    let agent = world.start_agent(&session, &[]).await;
    agent.wait_ready().await;
    let modules = world.project_dir().join("node_modules");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::write(modules.join("keep.js"), "1").unwrap();

    world.proxy.cut();
    let deadline = Instant::now() + CONVERGE_WITHIN;
    while agent.get("/readyz").await.is_some_and(|(code, _)| code == 200) {
        assert!(Instant::now() < deadline, "the agent never noticed the cut");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..10 {
        world.hub_put_direct(&project, &file(i), "changed while away").await;
        world.hub_delete_direct(&project, &file(30 + i)).await;
    }
    // Trim the whole log: the agent's `since` is now older than retention.
    let (client, connection) = tokio_postgres::connect(&world.database_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.execute("UPDATE synchub.events SET created_at = now() - interval '2 days'", &[]).await.unwrap();
    let pruned: i64 = client.query_one("SELECT synchub.prune_events('1 day')", &[]).await.unwrap().get(0);
    assert!(pruned >= 20, "pruned {pruned}");
    world.proxy.restore();

    converge(&world, &project, &agent, &["node_modules"]).await;
    assert_eq!(std::fs::read_to_string(modules.join("keep.js")).unwrap(), "1");
    caught_up(&world, &agent).await;
    // Live events still apply after the rehydration.
    world.put(&project, "later.txt", "live").await;
    converge(&world, &project, &agent, &["node_modules"]).await;
    let log = agent.log_without_secrets(&session, &["changed while away"]);
    assert!(log.contains("history trimmed; rehydrating"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_two_hubs_loses_nothing_and_1012_reconnects_at_once() {
    // Two hubs on one database; the proxy plays the load balancer, sending new
    // connections to whichever hub is not being restarted.
    let mut world = World::start().await;
    let config = || hub_config(&world.database_url, &world.dir.path().join("objects"), &world.proxy);
    let mut other = Hub::start(config()).await;
    let project = seeded_project(&world, 50).await;
    let session = world.session(&project).await;
    let agent = world.start_agent(&session, &[]).await;
    agent.wait_ready().await;

    for round in 0..2 {
        for i in 0..20 {
            world.put(&project, &format!("before{round}/k{i}.txt"), &format!("{i}")).await;
        }
        // Rolling restart of the hub the agent is on: new connections go to the other
        // one, then the hub is stopped gracefully and comes back.
        world.proxy.point_to(other.addr());
        world.hub.stop().await;
        for i in 0..20 {
            world.put(&project, &format!("after{round}/k{i}.txt"), &format!("{i}")).await;
        }
        converge(&world, &project, &agent, &[]).await;
        caught_up(&world, &agent).await;
        let restarted = Hub::start(config()).await;
        std::mem::swap(&mut world.hub, &mut other);
        other = restarted;
    }
    let log = agent.log_without_secrets(&session, &[]);
    assert_eq!(log.matches("the hub is restarting; reconnecting now").count(), 2, "{log}");
    assert!(!log.contains("disconnected; reconnecting"), "1012 is not a lost connection: {log}");
    other.kill();
}
