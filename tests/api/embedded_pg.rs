//! The private PostgreSQL cluster of `synchub dev` and the tests (CONTRACT section 9):
//! password authentication, never `trust`.

use std::os::unix::fs::PermissionsExt;

use synchub::embedded_pg::{Durability, EmbeddedPostgres};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::helpers::cluster;

#[tokio::test]
async fn the_private_cluster_refuses_connections_without_its_password() {
    let url = cluster().pg.url("postgres");
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("the cluster's own URL connects");
    tokio::spawn(conn);
    client.simple_query("SELECT 1").await.unwrap();

    let (_, host) = url.split_once('@').expect("a URL with credentials");
    for other in [format!("postgres://postgres@{host}"), format!("postgres://postgres:wrong@{host}")] {
        let err = tokio_postgres::connect(&other, NoTls).await.err().expect("refused without the password");
        // Without a password the client gives up before asking; with a wrong one the server refuses.
        let refused_by_server = err.as_db_error().is_some_and(|e| *e.code() == SqlState::INVALID_PASSWORD);
        assert!(refused_by_server || format!("{err:?}").contains("password missing"), "{err:?}");
    }
}

#[tokio::test]
async fn the_password_is_private_and_every_login_rule_asks_for_it() {
    let root =
        std::env::temp_dir().join(format!("synchub-test-{}-pw-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
    let pg = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&root, Durability::Throwaway).unwrap())
            .await
            .unwrap()
    };
    let password_file = root.join("password");
    assert_eq!(std::fs::metadata(&password_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&password_file).unwrap(), pg.password());

    let (client, connection) = tokio_postgres::connect(&pg.url("postgres"), NoTls).await.unwrap();
    tokio::spawn(connection);
    // No `trust` rule, not even for local unix sockets.
    let rules = client.query("SELECT auth_method FROM pg_hba_file_rules", &[]).await.unwrap();
    let methods: Vec<String> = rules.iter().map(|r| r.try_get(0).unwrap()).collect();
    assert!(!methods.is_empty() && methods.iter().all(|m| m == "scram-sha-256"), "{methods:?}");
    drop(client);
    tokio::task::spawn_blocking(move || pg.stop()).await.unwrap();
    let _ = std::fs::remove_dir_all(&root);
}
