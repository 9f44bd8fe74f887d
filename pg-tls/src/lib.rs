//! The one way synchub opens PostgreSQL connections: a `DATABASE_URL` becomes a
//! tokio-postgres [`Config`] plus a rustls connector, with libpq's TLS semantics:
//!
//! | `sslmode` | encrypts | verifies the certificate chain | checks the host name |
//! |---|---|---|---|
//! | `disable` | no | — | — |
//! | `prefer` (default) | if the server offers TLS | only with `sslrootcert` | no |
//! | `require` | yes | only with `sslrootcert` (as in libpq) | no |
//! | `verify-ca` | yes | yes | no |
//! | `verify-full` | yes | yes | yes |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` (the operating system's
//! trusted roots; `verify-full` is then the default and the only mode allowed, as in
//! libpq 16). Without it, `verify-*` reads `~/.postgresql/root.crt` and fails clearly if
//! that file does not exist (libpq does the same); a named file that is missing is always
//! an error (libpq would silently not verify under `prefer`/`require`). tokio-postgres
//! itself knows only `disable`/`prefer`/`require` and no `sslrootcert`, so those are
//! taken out of the string here before it parses the rest.
//!
//! When TLS is up, SCRAM authentication is bound to the server's certificate
//! (`tls-server-end-point` channel binding), so even `require` resists a relaying
//! man in the middle when the server authenticates by password.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256, Sha384, Sha512};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{Client, Config, Connection, Socket};

/// libpq's `sslmode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, Error> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq's `allow` (plaintext first, TLS only if refused) is not offered.
            other => return Err(Error::InvalidSslMode(other.to_string())),
        })
    }
}

/// What the connector checks of the server's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    Nothing,
    /// The chain leads to a trusted root (`verify-ca`).
    Chain,
    /// The chain, and the certificate names the host (`verify-full`).
    ChainAndName,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid sslmode {0:?} (expected disable, prefer, require, verify-ca or verify-full)")]
    InvalidSslMode(String),
    #[error("weak sslmode {0:?} may not be used with sslrootcert=system (use verify-full)")]
    WeakModeWithSystemRoots(String),
    #[error("invalid DATABASE_URL: {0}")]
    Parse(#[source] tokio_postgres::Error),
    #[error("invalid DATABASE_URL: {0}")]
    Syntax(&'static str),
    #[error("sslrootcert {}: {source}", path.display())]
    RootCertRead { path: PathBuf, source: std::io::Error },
    #[error("sslrootcert {}: no usable CA certificate in it ({reason})", path.display())]
    RootCertInvalid { path: PathBuf, reason: String },
    #[error(
        "root certificate file {} does not exist: give one with sslrootcert=PATH, use the \
         system's trusted roots with sslrootcert=system, or use sslmode=require to encrypt \
         without verifying the server",
        path.display()
    )]
    NoRootCert { path: PathBuf },
    #[error("sslrootcert=system: no trusted roots found on this system")]
    NoSystemRoots,
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A parsed `DATABASE_URL`: where and how to connect. Cheap to clone.
#[derive(Clone)]
pub struct PgConnect {
    config: Config,
    tls: MakeRustlsConnect,
    verify: Verify,
}

impl std::fmt::Debug for PgConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Config's Debug redacts the password.
        f.debug_struct("PgConnect").field("config", &self.config).field("verify", &self.verify).finish()
    }
}

impl PgConnect {
    /// Parses a `postgres://` URL or a libpq `key=value` string.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let split = split_tls_params(url)?;
        let (mode, verify) = effective_mode(split.sslmode.as_deref(), split.sslrootcert.as_deref())?;
        let mut config: Config = split.rest.parse().map_err(Error::Parse)?;
        config.ssl_mode(mode);
        let verifier: Arc<dyn ServerCertVerifier> = if verify == Verify::Nothing {
            Arc::new(Unverified(provider().signature_verification_algorithms))
        } else {
            let roots = load_roots(split.sslrootcert.as_deref())?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|err| Error::Tls(rustls::Error::General(err.to_string())))?;
            if verify == Verify::ChainAndName { webpki } else { Arc::new(ChainOnly(webpki)) }
        };
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // What libpq 17 sends; PostgreSQL 17 requires it for sslnegotiation=direct.
        client.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(PgConnect { config, tls: MakeRustlsConnect { config: Arc::new(client) }, verify })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn verify(&self) -> Verify {
        self.verify
    }

    /// The connector, for pools (deadpool's `Manager::from_config`).
    pub fn tls(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    /// Opens one connection; the caller spawns the returned `Connection`.
    pub async fn connect(&self) -> Result<(Client, Connection<Socket, RustlsStream<Socket>>), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

/// libpq's rules: `prefer` by default; a root file makes `prefer`/`require` verify the
/// chain (as `verify-ca`); `sslrootcert=system` means `verify-full` and allows no weaker
/// mode. Unlike libpq, a named root file that is missing is an error, never a silent
/// downgrade to no verification.
fn effective_mode(sslmode: Option<&str>, sslrootcert: Option<&str>) -> Result<(PgSslMode, Verify), Error> {
    let mode = sslmode.map(SslMode::parse).transpose()?;
    if sslrootcert == Some("system") {
        return match mode {
            None | Some(SslMode::VerifyFull) => Ok((PgSslMode::Require, Verify::ChainAndName)),
            Some(_) => Err(Error::WeakModeWithSystemRoots(sslmode.unwrap_or_default().to_string())),
        };
    }
    let root_file = if sslrootcert.is_some() { Verify::Chain } else { Verify::Nothing };
    Ok(match mode.unwrap_or(SslMode::Prefer) {
        SslMode::Disable => (PgSslMode::Disable, Verify::Nothing),
        SslMode::Prefer => (PgSslMode::Prefer, root_file),
        SslMode::Require => (PgSslMode::Require, root_file),
        SslMode::VerifyCa => (PgSslMode::Require, Verify::Chain),
        SslMode::VerifyFull => (PgSslMode::Require, Verify::ChainAndName),
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The connection string without `sslrootcert`, and with `sslmode` in the form
/// tokio-postgres accepts (`verify-*` becomes `require`; the verification is ours).
#[derive(Debug, PartialEq)]
struct TlsParams {
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

fn split_tls_params(url: &str) -> Result<TlsParams, Error> {
    let mut sslmode = None;
    let mut sslrootcert = None;
    let mut take = |key: &str, value: String| -> Result<Option<String>, Error> {
        match key {
            "sslmode" => {
                let forwarded = match SslMode::parse(&value)? {
                    SslMode::VerifyCa | SslMode::VerifyFull => "require".to_string(),
                    _ => value.clone(),
                };
                sslmode = Some(value);
                Ok(Some(forwarded))
            }
            "sslrootcert" => {
                sslrootcert = Some(value);
                Ok(None)
            }
            _ => Ok(Some(value)),
        }
    };
    let rest = if let Some(after) = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://")) {
        let scheme = &url[..url.len() - after.len()];
        // Same split as tokio-postgres: the credentials end at the first '@'.
        let params_at = after.find('@').map_or(0, |at| at + 1);
        match after[params_at..].find('?') {
            None => url.to_string(),
            Some(q) => {
                let (head, query) = after.split_at(params_at + q);
                let mut kept = Vec::new();
                for pair in query[1..].split('&').filter(|pair| !pair.is_empty()) {
                    let (raw_key, raw_value) = pair.split_once('=').ok_or(Error::Syntax("parameter without '='"))?;
                    let key = percent_decode(raw_key)?;
                    let value = percent_decode(raw_value)?;
                    let forward_raw = key != "sslmode";
                    if let Some(value) = take(&key, value)? {
                        kept.push(if forward_raw { pair.to_string() } else { format!("{raw_key}={value}") });
                    }
                }
                if kept.is_empty() { format!("{scheme}{head}") } else { format!("{scheme}{head}?{}", kept.join("&")) }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (key, value) in key_values(url)? {
            if let Some(value) = take(&key, value)? {
                kept.push(format!("{key}='{}'", value.replace('\\', "\\\\").replace('\'', "\\'")));
            }
        }
        kept.join(" ")
    };
    Ok(TlsParams { rest, sslmode, sslrootcert })
}

fn percent_decode(raw: &str) -> Result<String, Error> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::Syntax("parameter is not UTF-8"))
}

/// libpq's `key = value` syntax: values may be single-quoted, `\` escapes one character.
fn key_values(s: &str) -> Result<Vec<(String, String)>, Error> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| c.is_alphanumeric() || *c == '_') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if key.is_empty() || chars.next() != Some('=') {
            return Err(Error::Syntax("expected key=value"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or(Error::Syntax("unterminated quoted value"))?),
                    Some(c) => value.push(c),
                    None => return Err(Error::Syntax("unterminated quoted value")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or(Error::Syntax("dangling backslash"))?);
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// The trust anchors of `verify-*`: the `sslrootcert` file, the system's roots for
/// `system`, else libpq's default `~/.postgresql/root.crt`.
fn load_roots(sslrootcert: Option<&str>) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    if sslrootcert == Some("system") {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(Error::NoSystemRoots);
        }
        return Ok(roots);
    }
    let path = match sslrootcert {
        Some(path) => PathBuf::from(path),
        None => {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
            let path = home.join(".postgresql/root.crt");
            if !path.exists() {
                return Err(Error::NoRootCert { path });
            }
            path
        }
    };
    add_pem_file(&mut roots, &path)?;
    Ok(roots)
}

fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<(), Error> {
    let pem = std::fs::read(path).map_err(|source| Error::RootCertRead { path: path.to_path_buf(), source })?;
    let invalid = |reason: String| Error::RootCertInvalid { path: path.to_path_buf(), reason };
    let certs =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid("no PEM CERTIFICATE block".into()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(())
}

/// `prefer`/`require`: encryption without authentication of the server (libpq's meaning).
/// Handshake signatures are still checked, so the session key belongs to whoever
/// presented the certificate (what channel binding relies on).
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name in it is not checked.
/// webpki checks the chain before the name, so a name mismatch means the chain passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres's TLS hook over tokio-rustls.
#[derive(Clone)]
pub struct MakeRustlsConnect {
    config: Arc<ClientConfig>,
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = std::convert::Infallible;

    /// A host name unfit for TLS (or none: a Unix socket, a bare `hostaddr`) fails only if
    /// the server actually offers TLS, so `prefer` still works over a Unix socket.
    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        let name = ServerName::try_from(domain).map(|name| name.to_owned()).map_err(|_| domain.to_string());
        Ok(RustlsConnect { connector: tokio_rustls::TlsConnector::from(self.config.clone()), name })
    }
}

pub struct RustlsConnect {
    connector: tokio_rustls::TlsConnector,
    /// The name to verify, or the host that is not one.
    name: Result<ServerName<'static>, String>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = self.name.map_err(|host| {
                let message =
                    format!("host {host:?} is not a name TLS can verify (set host=NAME to the server's name)");
                std::io::Error::new(std::io::ErrorKind::InvalidInput, message)
            })?;
            Ok(RustlsStream(self.connector.connect(name, stream).await?))
        })
    }
}

pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        match session.peer_certificates().and_then(|chain| chain.first()).and_then(|cert| tls_server_end_point(cert)) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// RFC 5929 `tls-server-end-point`: the certificate hashed with its signature's hash
/// (SHA-256 for MD5 and SHA-1). None for algorithms without one (Ed25519, RSA-PSS), as
/// PostgreSQL does; SCRAM then runs without channel binding.
fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    let (certificate, _) = der(cert, 0x30)?;
    let (_, after_tbs) = der(certificate, 0x30)?;
    let (algorithm, _) = der(after_tbs, 0x30)?;
    let (oid, _) = der(algorithm, 0x06)?;
    let hash = match oid.split_last()? {
        (0x04 | 0x05 | 0x0b, prefix) if prefix == RSA => Sha256::digest(cert).to_vec(),
        (0x0c, prefix) if prefix == RSA => Sha384::digest(cert).to_vec(),
        (0x0d, prefix) if prefix == RSA => Sha512::digest(cert).to_vec(),
        (0x02, prefix) if prefix == ECDSA_SHA2 => Sha256::digest(cert).to_vec(),
        (0x03, prefix) if prefix == ECDSA_SHA2 => Sha384::digest(cert).to_vec(),
        (0x04, prefix) if prefix == ECDSA_SHA2 => Sha512::digest(cert).to_vec(),
        _ if oid == ECDSA_SHA1 => Sha256::digest(cert).to_vec(),
        _ => return None,
    };
    Some(hash)
}

/// One DER element with the expected tag: (its contents, what follows it).
fn der(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (len, rest) = if len < 0x80 {
        (len as usize, rest)
    } else {
        let count = (len & 0x7f) as usize;
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        (bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), rest)
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> TlsParams {
        split_tls_params(url).unwrap()
    }

    #[test]
    fn url_tls_params_are_taken_out() {
        let p = split(
            "postgres://u:p%3F@db.example.com:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=hub",
        );
        assert_eq!(p.rest, "postgres://u:p%3F@db.example.com:5432/app?sslmode=require&application_name=hub");
        assert_eq!(p.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(p.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        let p = split("postgresql://h/db?sslrootcert=ca.pem");
        assert_eq!(p.rest, "postgresql://h/db");
        assert_eq!(p.sslmode, None);
        let p = split("postgres://u:pa?ss@h/db");
        assert_eq!(p.rest, "postgres://u:pa?ss@h/db");
    }

    #[test]
    fn key_value_tls_params_are_taken_out() {
        let p = split("host=localhost  user = 'o\\'brien' sslmode=verify-ca sslrootcert='/a b/ca.pem'");
        assert_eq!(p.rest, "host='localhost' user='o\\'brien' sslmode='require'");
        assert_eq!(p.sslrootcert.as_deref(), Some("/a b/ca.pem"));
        let config: Config = p.rest.parse().unwrap();
        assert_eq!(config.get_user(), Some("o'brien"));
        assert!(split_tls_params("host=a sslrootcert='x").is_err());
    }

    #[test]
    fn modes_follow_libpq() {
        use PgSslMode::{Disable, Prefer, Require};
        use Verify::{Chain, ChainAndName, Nothing};
        let mode = |sslmode, sslrootcert| effective_mode(sslmode, sslrootcert).unwrap();
        assert_eq!(mode(None, None), (Prefer, Nothing));
        assert_eq!(mode(Some("disable"), Some("ca.pem")), (Disable, Nothing));
        assert_eq!(mode(Some("prefer"), Some("ca.pem")), (Prefer, Chain));
        assert_eq!(mode(Some("require"), None), (Require, Nothing));
        assert_eq!(mode(Some("require"), Some("ca.pem")), (Require, Chain));
        assert_eq!(mode(Some("verify-ca"), None), (Require, Chain));
        assert_eq!(mode(Some("verify-full"), Some("ca.pem")), (Require, ChainAndName));
        assert_eq!(mode(None, Some("system")), (Require, ChainAndName));
        assert!(matches!(effective_mode(Some("require"), Some("system")), Err(Error::WeakModeWithSystemRoots(_))));
        assert!(matches!(effective_mode(Some("allow"), None), Err(Error::InvalidSslMode(_))));
        let mode = |url: &str| PgConnect::from_url(url).map(|c| c.verify());
        let missing = mode("postgres://h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem").unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/ca.pem"), "{missing}");
        let config = PgConnect::from_url("postgres://h/db?sslmode=require").unwrap();
        assert_eq!(config.config().get_ssl_mode(), PgSslMode::Require);
    }

    #[test]
    fn no_host_name_fails_only_when_tls_is_used() {
        let mut tls = PgConnect::from_url("host=/run/postgresql").unwrap().tls();
        let connect = MakeTlsConnect::<tokio::io::DuplexStream>::make_tls_connect(&mut tls, "").unwrap();
        assert!(connect.name.is_err());
    }

    #[test]
    fn der_walk_rejects_truncated_input() {
        assert_eq!(der(&[0x30, 0x03, 1, 2], 0x30), None);
        assert_eq!(der(&[0x30, 0x82, 0x00, 0x01, 7], 0x30), Some((&[7u8][..], &[][..])));
        assert_eq!(tls_server_end_point(&[0x30, 0x00]), None);
    }
}
