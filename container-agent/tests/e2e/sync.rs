//! Hydration, then live edits; a symlink planted in the tree cannot redirect a write.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydrates_500_files_then_follows_100_mixed_edits() {
    let world = World::start().await;
    let project = seeded_project(&world, 500).await;
    let session = world.session(&project).await;
    // The agent reaches the hub by host name (and so does its snapshot download).
    let hub_url = session["env"]["SYNCHUB_URL"].as_str().unwrap();
    assert!(hub_url.starts_with("http://localhost:"), "{hub_url}");
    let agent = world.start_agent(&session, &[]).await;
    agent.wait_ready().await;
    let want = world.files(&project).await;
    assert_eq!(want.len(), 500);
    assert_eq!(read_tree(&world.project_dir(), &[]), want, "hydrated tree equals the project");

    // The dev server's own files are never touched.
    let modules = world.project_dir().join("node_modules/pkg");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::write(modules.join("index.js"), "module.exports = 1;\n").unwrap();

    mixed_edits(&world, &project, 0).await;
    world.move_file(&project, "src/d0/f0.ts", "renamed/zero.ts").await;
    converge(&world, &project, &agent, &["node_modules"]).await;
    assert_eq!(std::fs::read_to_string(modules.join("index.js")).unwrap(), "module.exports = 1;\n");
    caught_up(&world, &agent).await;
    let status = agent.status().await;
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["applied"], status["cursor"], "{status}");
    assert!(status["last_lag_ms"].is_u64(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_planted_in_the_tree_cannot_redirect_writes() {
    let world = World::start().await;
    let project = world.create_project().await;
    world.put(&project, "a.txt", "a").await;
    let session = world.session(&project).await;
    let agent = world.start_agent(&session, &[]).await;
    agent.wait_ready().await;

    let outside = world.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "keep me").unwrap();
    let root = world.project_dir();
    std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("link.txt")).unwrap();

    world.put(&project, "evil/pwn.txt", "pwned").await;
    world.put(&project, "link.txt", "replaced").await;
    world.bulk(&project, vec![("evil/more.txt".into(), "x".into()), ("ok/b.txt".into(), "b".into())], vec![]).await;
    world.put(&project, "after.txt", "still applying").await;

    // Everything but the paths under the planted directory link converges.
    converge(&world, &project, &agent, &["evil"]).await;
    let entries: Vec<String> =
        std::fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(entries, vec!["secret.txt".to_string()], "nothing was written outside PROJECT_DIR");
    assert_eq!(std::fs::read_to_string(outside.join("secret.txt")).unwrap(), "keep me");
    // The final-component link was replaced by a real file, not written through.
    assert!(std::fs::symlink_metadata(root.join("link.txt")).unwrap().is_file());
    assert!(std::fs::symlink_metadata(root.join("evil")).unwrap().file_type().is_symlink());
    caught_up(&world, &agent).await;
    let log = agent.log_without_secrets(&session, &["pwned", "still applying"]);
    assert!(log.contains("path refused") && log.contains("evil/pwn.txt"), "{log}");
}

/// CONTRACT section 12: edits of a large file reach the agent as deltas it applies to its
/// own copy; when its copy is not the delta's base (here: the dev server changed the file)
/// it reads the file over HTTP instead, and the tree still ends equal to the project.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_delta_events_and_reads_the_file_when_its_copy_is_not_the_base() {
    let world = World::start().await;
    let project = world.create_project().await;
    world.put(&project, "seed.txt", "seed").await;
    let session = world.session(&project).await;
    let agent = world.start_agent(&session, &[]).await;
    agent.wait_ready().await;

    // Written after the agent joined: its socket sees every version, so edits 2.. are deltas.
    let mut content: String = (0..4000).map(|i| format!("export const line{i:05} = {i};\n")).collect();
    world.put(&project, "src/big.ts", &content).await;
    for i in 0..20 {
        let at = 1000 + i * 3001;
        content.replace_range(at..at + 1, "#");
        world.put(&project, "src/big.ts", &content).await;
    }
    let want = converge(&world, &project, &agent, &[]).await;
    assert_eq!(want["src/big.ts"], content);
    let log = agent.log_without_secrets(&session, &[]);
    assert!(!log.contains("reading the file"), "every delta applied: {log}");

    // The dev server rewrites the file locally: the next delta's base is not in the tree.
    std::fs::write(world.project_dir().join("src/big.ts"), "changed by the dev server\n").unwrap();
    content.replace_range(0..1, "/");
    world.put(&project, "src/big.ts", &content).await;
    let want = converge(&world, &project, &agent, &[]).await;
    assert_eq!(want["src/big.ts"], content);
    caught_up(&world, &agent).await;
    assert!(agent.log_tail().contains("reading the file"), "{}", agent.log_tail());
}
