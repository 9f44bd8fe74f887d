//! PostgreSQL over TLS (contract 1: `DATABASE_URL` with `sslmode`/`sslrootcert`): a server
//! that accepts TLS connections only (`hostssl`, and `hostnossl … reject`), with a server
//! certificate for `localhost`/127.0.0.1 from a CA made at test time.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use synchub::embedded_pg::{Durability, EmbeddedPostgres};

use crate::helpers::{TestApp, cluster, test_config};

const TLS_ONLY_HBA: &str = "hostnossl all all 127.0.0.1/32 reject
hostssl all all 127.0.0.1/32 scram-sha-256
";

struct TlsServer {
    pg: EmbeddedPostgres,
    /// The CA that signed the server's certificate.
    ca: PathBuf,
    /// A CA that signed nothing the server has.
    other_ca: PathBuf,
}

static SERVER: OnceLock<TlsServer> = OnceLock::new();

fn server() -> &'static TlsServer {
    SERVER.get_or_init(|| {
        // Inside the shared cluster's directory, so it is cleaned up with it.
        let root = cluster().pg.cluster_dir().join("tls");
        let pg = EmbeddedPostgres::start(&root, Durability::Throwaway).expect("start PostgreSQL");
        pg.stop();

        let (ca, ca_pem) = certificate_authority("synchub test CA");
        let (_, other_ca_pem) = certificate_authority("some other CA");
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let server_cert = params.signed_by(&server_key, &ca).unwrap();

        let data = pg.cluster_dir().join("data");
        let owner = std::fs::metadata(&data).unwrap();
        let write_owned = |name: &str, contents: &str| {
            let path = data.join(name);
            synchub::embedded_pg::write_private(&path, contents).unwrap();
            std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
        };
        write_owned("server.crt", &server_cert.pem());
        write_owned("server.key", &server_key.serialize_pem());
        write_owned("pg_hba.conf", TLS_ONLY_HBA);
        let conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        write_owned("postgresql.conf", &format!("{conf}\nssl = on\n"));
        pg.restart(Durability::Throwaway).expect("restart PostgreSQL with TLS on");

        let ca = root.join("ca.pem");
        let other_ca = root.join("other-ca.pem");
        std::fs::write(&ca, ca_pem).unwrap();
        std::fs::write(&other_ca, other_ca_pem).unwrap();
        TlsServer { pg, ca, other_ca }
    })
}

fn certificate_authority(name: &str) -> (CertifiedIssuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let pem = issuer.pem();
    (issuer, pem)
}

impl TlsServer {
    /// A URL naming `host` (the name TLS checks) while connecting to 127.0.0.1.
    fn url_for(&self, host: &str, database: &str, params: &str) -> String {
        format!(
            "postgres://postgres:{}@{host}:{}/{database}?hostaddr=127.0.0.1&{params}",
            self.pg.password(),
            self.pg.port
        )
    }

    fn url(&self, database: &str, params: &str) -> String {
        self.url_for("localhost", database, params)
    }

    fn verify_full(&self) -> String {
        format!("sslmode=verify-full&sslrootcert={}", self.ca.display())
    }

    async fn connect(&self, url: &str) -> Result<tokio_postgres::Client, String> {
        // `{:#}`: the whole chain (tokio-postgres puts the TLS reason in the source).
        let (client, connection) = synchub::db::connect(url).await.map_err(|e| format!("{e:#}"))?;
        tokio::spawn(connection);
        Ok(client)
    }

    async fn admin(&self) -> tokio_postgres::Client {
        self.connect(&self.url("postgres", &self.verify_full())).await.expect("admin connection")
    }

    async fn new_database(&self) -> String {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        self.admin().await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        name
    }
}

/// True when the connection `client` is on is encrypted, as the server sees it.
async fn server_sees_tls(client: &tokio_postgres::Client) -> bool {
    client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_hub_with_verify_full_migrates_serves_writes_and_delivers_events_over_tls() {
    let server = server();
    let database = server.new_database().await;
    let url = server.url(&database, &server.verify_full());
    // Two hubs: an event written through one reaches the other's sockets.
    let first = TestApp::spawn_on(test_config(url.clone())).await;
    let second = TestApp::spawn_on(test_config(url)).await;
    let p = first.create_project("alice", "over tls").await;
    let mut ws = second.ws(&second.user_token("alice")).await;
    ws.join(&p, None).await;
    first.write("alice", &p, "a.ts", "encrypted all the way").await;
    assert_eq!(ws.events(1).await[0]["payload"]["content"], "encrypted all the way");

    // The snapshot-builder CLI reads the same DATABASE_URL.
    let output = crate::snapshot_cli::build(&first, &p, "-").await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.starts_with(b"PK"), "not a zip archive");

    // Both hubs' LISTEN connections are up (the server accepts TLS connections only).
    let admin = server.admin().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listeners: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.datname = $1 AND a.query LIKE 'LISTEN%' AND s.ssl",
                &[&database],
            )
            .await
            .unwrap()
            .get(0);
        if listeners == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{listeners} of 2 LISTEN connections after 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sslmode_disable_is_refused_by_a_server_that_requires_tls() {
    let server = server();
    let config = test_config(server.url("postgres", "sslmode=disable"));
    let err = synchub::App::build(config).await.err().expect("refused");
    let message = format!("{err:#}");
    assert!(message.contains("pg_hba.conf") && message.contains("no encryption"), "{message}");
}

#[tokio::test]
async fn verify_full_with_another_ca_fails_with_a_tls_error() {
    let server = server();
    let config =
        test_config(server.url("postgres", &format!("sslmode=verify-full&sslrootcert={}", server.other_ca.display())));
    let err = synchub::App::build(config).await.err().expect("refused");
    let message = format!("{err:#}");
    assert!(message.contains("TLS handshake") && message.contains("UnknownIssuer"), "{message}");
}

#[tokio::test]
async fn require_encrypts_without_knowing_the_ca_and_checks_the_chain_with_a_root_file_as_libpq_does() {
    let server = server();
    // No sslrootcert: encrypted, server not verified. Channel binding still ties the
    // password exchange to this server's certificate.
    let client = server.connect(&server.url("postgres", "sslmode=require&channel_binding=require")).await.unwrap();
    assert!(server_sees_tls(&client).await);
    // The default (prefer) takes TLS when the server offers it.
    let client = server.connect(&server.url("postgres", "")).await.unwrap();
    assert!(server_sees_tls(&client).await);
    // With a root file, require checks the chain, as libpq does.
    let other = format!("sslmode=require&sslrootcert={}", server.other_ca.display());
    let err = server.connect(&server.url("postgres", &other)).await.expect_err("unknown CA refused");
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn verify_ca_checks_the_chain_and_verify_full_also_the_host_name() {
    let server = server();
    let ca = server.ca.display();
    let elsewhere =
        |mode: &str| server.url_for("db.elsewhere.invalid", "postgres", &format!("sslmode={mode}&sslrootcert={ca}"));
    let client = server.connect(&elsewhere("verify-ca")).await.unwrap();
    assert!(server_sees_tls(&client).await);
    let err = server.connect(&elsewhere("verify-full")).await.expect_err("name mismatch refused");
    assert!(err.contains("TLS handshake") && err.contains("not valid for name"), "{err}");
    let other = format!("sslmode=verify-ca&sslrootcert={}", server.other_ca.display());
    let err = server.connect(&server.url("postgres", &other)).await.expect_err("unknown CA refused");
    assert!(err.contains("UnknownIssuer"), "{err}");
    // A missing root file is a configuration error that names the file.
    let err = server.connect(&server.url("postgres", "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem")).await;
    assert!(err.expect_err("missing file").contains("/nonexistent/ca.pem"));
}
