//! Binary files (CONTRACT section 13) end to end: written to the hub straight (octet-stream)
//! and through the blob flow (announce, upload to the signed URL, reference), hydrated from
//! the snapshot, then followed live (fetched by sha256 and checked) byte for byte, including
//! a backlog replayed after a network cut. (Bytes that fail the check cannot be produced
//! through the hub: `container_agent::blobs` unit tests prove those are never written.)

use super::*;

/// Bytes no text file could hold: NULs and invalid UTF-8, different for each `seed`.
fn image(len: usize, seed: u32) -> Vec<u8> {
    let mut state = 0x9E37_79B9u32 ^ seed.wrapping_mul(0x85EB_CA6B);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    container_agent::tree::sha256_hex(bytes)
}

impl World {
    /// `PUT …/files/{path}` with the bytes as an `application/octet-stream` body (≤ 2 MiB),
    /// to `base` (the proxy, or the hub directly while the proxy is cut).
    async fn put_binary_at(&self, base: &str, project: &str, path: &str, bytes: &[u8]) -> Value {
        let response = self
            .http
            .put(format!("{base}/v1/projects/{project}/files/{path}?op_id={}", uuid::Uuid::new_v4()))
            .bearer_auth(user_token(USER))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "binary PUT {path}: {status} {body}");
        body
    }

    async fn put_binary(&self, project: &str, path: &str, bytes: &[u8]) -> Value {
        self.put_binary_at(&self.proxy.base(), project, path, bytes).await
    }

    /// The large-file flow: `POST …/blobs`, `PUT` the bytes to the signed URL (no token),
    /// then `PUT …/files/{path}` `{blob}`.
    async fn put_blob(&self, project: &str, path: &str, bytes: &[u8]) -> Value {
        let blob = json!({"sha256": sha256_hex(bytes), "size": bytes.len()});
        let (status, announced) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/projects/{project}/blobs"),
                &user_token(USER),
                Some(blob.clone()),
            )
            .await;
        assert!(status == 200 || status == 201, "POST blobs: {status} {announced}");
        if announced["exists"] != true {
            let url = announced["upload_url"].as_str().unwrap_or_else(|| panic!("no upload_url: {announced}"));
            let response = self.http.put(url).body(bytes.to_vec()).send().await.unwrap();
            assert!(response.status().is_success(), "upload to the signed URL: {}", response.status());
        }
        self.must(
            reqwest::Method::PUT,
            &format!("/v1/projects/{project}/files/{path}"),
            json!({"blob": blob, "op_id": uuid::Uuid::new_v4()}),
        )
        .await
    }

    /// The project's file paths, with each binary file's blob address (None for text).
    async fn listing(&self, project: &str) -> BTreeMap<String, Option<String>> {
        let (status, list) =
            self.call(reqwest::Method::GET, &format!("/v1/projects/{project}/files"), &user_token(USER), None).await;
        assert_eq!(status, 200, "{list}");
        list["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["path"].as_str().unwrap().to_owned(), f["blob"]["sha256"].as_str().map(str::to_owned)))
            .collect()
    }
}

/// Every regular file under `root` as bytes, skipping `.synchub/`.
fn read_bytes(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                if path != ".synchub" {
                    walk(&entry.path(), &path, out);
                }
            } else if kind.is_file() {
                out.insert(path, std::fs::read(entry.path()).unwrap_or_default());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

/// Polls until the agent's tree holds exactly `want`, byte for byte.
async fn converge_bytes(world: &World, agent: &Agent, want: &BTreeMap<String, Vec<u8>>) {
    let deadline = Instant::now() + CONVERGE_WITHIN;
    loop {
        let root = world.project_dir();
        let have = tokio::task::spawn_blocking(move || read_bytes(&root)).await.unwrap();
        if &have == want {
            return;
        }
        if Instant::now() > deadline {
            let differ: Vec<&String> = want.keys().filter(|k| have.get(*k) != Some(&want[*k])).take(5).collect();
            let extra: Vec<&String> = have.keys().filter(|k| !want.contains_key(*k)).take(5).collect();
            panic!("the tree did not converge: different or missing {differ:?}, extra {extra:?}\n{}", agent.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_files_hydrate_and_follow_live_edits_byte_identical() {
    let world = World::start().await;
    let project = world.create_project().await;
    let mut want: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    world.put(&project, "src/index.ts", "export {}\n").await;
    want.insert("src/index.ts".into(), b"export {}\n".to_vec());
    for (i, (path, len)) in
        [("public/logo.png", 300_000), ("public/empty.bin", 0), ("fonts/a.woff2", 40_000)].iter().enumerate()
    {
        let bytes = image(*len, i as u32);
        world.put_binary(&project, path, &bytes).await;
        want.insert((*path).into(), bytes);
    }
    // Over the straight-PUT limit: the blob flow.
    let big = image(3 * 1024 * 1024 + 17, 9);
    world.put_blob(&project, "media/intro.mp4", &big).await;
    want.insert("media/intro.mp4".into(), big.clone());

    let session = world.session(&project).await;
    let agent = world.start_agent(&session, &[]).await;
    agent.wait_ready().await;
    converge_bytes(&world, &agent, &want).await;

    // Live: replace, add through both flows, the same bytes at a second path (one blob),
    // a move (a bulk:apply carrying the blob), binary → text and text → binary, a delete.
    let logo = image(120_000, 20);
    world.put_binary(&project, "public/logo.png", &logo).await;
    want.insert("public/logo.png".into(), logo.clone());
    let sprite = image(2 * 1024 * 1024 + 1, 21);
    world.put_blob(&project, "public/sprite.png", &sprite).await;
    want.insert("public/sprite.png".into(), sprite);
    world.put_binary(&project, "public/logo-copy.png", &logo).await;
    want.insert("public/logo-copy.png".into(), logo);
    world.move_file(&project, "media/intro.mp4", "media/moved.mp4").await;
    want.remove("media/intro.mp4");
    want.insert("media/moved.mp4".into(), big);
    world.put(&project, "fonts/a.woff2", "now text").await;
    want.insert("fonts/a.woff2".into(), b"now text".to_vec());
    let became_binary = image(777, 22);
    world.put_binary(&project, "src/index.ts", &became_binary).await;
    want.insert("src/index.ts".into(), became_binary);
    world.delete(&project, "public/empty.bin").await;
    want.remove("public/empty.bin");

    converge_bytes(&world, &agent, &want).await;
    caught_up(&world, &agent).await;
    let listing = world.listing(&project).await;
    assert_eq!(listing.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    assert_eq!(listing["public/logo.png"].as_deref(), Some(sha256_hex(&want["public/logo.png"]).as_str()));
    assert_eq!(listing["fonts/a.woff2"], None, "text again");
    // No fetched blob is left behind in the agent's cache.
    let cache = world.project_dir().join(container_agent::tree::BLOB_DIR);
    assert_eq!(std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0), 0);
    let log = agent.log_without_secrets(&session, &["now text"]);
    assert!(!log.contains("path refused"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_edits_made_while_cut_off_are_replayed_once_healed() {
    let world = World::start().await;
    let project = world.create_project().await;
    // Every binary file arrives by events here (the snapshot holds text only).
    world.put(&project, "index.html", "<img src=img/a.png>").await;
    let session = world.session(&project).await;
    let agent = world.start_agent(&session, &[]).await;
    agent.wait_ready().await;
    let first = image(50_000, 1);
    world.put_binary(&project, "img/a.png", &first).await;
    let big = image(3 * 1024 * 1024, 2);
    world.put_blob(&project, "img/big.png", &big).await;
    let mut want = BTreeMap::from([
        ("index.html".to_owned(), b"<img src=img/a.png>".to_vec()),
        ("img/a.png".to_owned(), first),
        ("img/big.png".to_owned(), big),
    ]);
    converge_bytes(&world, &agent, &want).await;

    world.proxy.cut();
    // Straight to the hub while the agent's path is cut: one path edited many times (the
    // replayed batch fetches only its last bytes), and new files.
    let direct = world.hub.direct.clone();
    for i in 0..10u32 {
        let bytes = image(10_000 + i as usize, 100 + i);
        world.put_binary_at(&direct, &project, "img/a.png", &bytes).await;
        want.insert("img/a.png".into(), bytes);
        let other = image(1000, 200 + i);
        world.put_binary_at(&direct, &project, &format!("img/n{i}.png"), &other).await;
        want.insert(format!("img/n{i}.png"), other);
    }
    let deadline = Instant::now() + CONVERGE_WITHIN;
    while agent.get("/readyz").await.is_some_and(|(code, _)| code == 200) {
        assert!(Instant::now() < deadline, "the agent never noticed the cut");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    world.proxy.restore();
    converge_bytes(&world, &agent, &want).await;
    caught_up(&world, &agent).await;
}
