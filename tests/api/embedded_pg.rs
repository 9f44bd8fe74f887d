//! The private PostgreSQL cluster of `synchub dev` and the tests (CONTRACT section 9):
//! password authentication, never `trust`.

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
