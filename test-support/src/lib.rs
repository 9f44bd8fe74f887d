//! Helpers for tests and the bench, never for production code (`publish = false`; the
//! agent has it as a dev-dependency only). [`CutProxy`]: a loopback TCP proxy that can
//! cut every connection and refuse new ones, then heal, to break a link on purpose.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A TCP proxy on 127.0.0.1 to one upstream address (which may change, for a restarted
/// server). Stops on drop.
pub struct CutProxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    open: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
    /// When each connection was let through.
    accepted: Arc<Mutex<Vec<Instant>>>,
    task: JoinHandle<()>,
}

impl CutProxy {
    /// A proxy with no upstream yet: connections are dropped until [`Self::point_to`].
    pub async fn start() -> io::Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let open = Arc::new(AtomicBool::new(true));
        let accepted: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let (cuts, cut_rx) = watch::channel(0u64);
        let (up, is_open, log) = (upstream.clone(), open.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    continue; // dropped at once: the connection is refused
                }
                let Some(target) = *up.lock().unwrap_or_else(PoisonError::into_inner) else { continue };
                log.lock().unwrap_or_else(PoisonError::into_inner).push(Instant::now());
                let mut cut = cut_rx.clone();
                cut.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Ok(CutProxy { addr, upstream, open, cuts, accepted, task })
    }

    /// A proxy to `upstream`.
    pub async fn to(upstream: SocketAddr) -> io::Result<CutProxy> {
        let proxy = Self::start().await?;
        proxy.point_to(upstream);
        Ok(proxy)
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://localhost:PORT`: the proxy by host name, for what a hub hands agents, so they
    /// resolve a name as in a real deployment (a static agent's getaddrinfo included).
    pub fn named_base(&self) -> String {
        format!("http://localhost:{}", self.addr.port())
    }

    /// New connections go to `upstream`; open ones stay where they are.
    pub fn point_to(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap_or_else(PoisonError::into_inner) = Some(upstream);
    }

    /// Drops every open connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Lets new connections through again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// The first connection let through at or after `since`.
    pub fn first_accept_since(&self, since: Instant) -> Option<Instant> {
        self.accepted.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().find(|&t| t >= since)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An echo server on loopback.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream) -> io::Result<()> {
        stream.write_all(b"ping").await?;
        let mut answer = [0u8; 4];
        match tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_exact(&mut answer)).await {
            Ok(Ok(_)) if &answer == b"ping" => Ok(()),
            Ok(Ok(_)) => Err(io::Error::other("wrong echo")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other("no answer")),
        }
    }

    #[tokio::test]
    async fn cuts_open_connections_refuses_new_ones_then_heals() {
        let proxy = CutProxy::to(echo().await).await.unwrap();
        let before = Instant::now();
        let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut first).await.unwrap();
        assert!(proxy.first_accept_since(before).is_some());

        proxy.cut();
        assert!(round_trip(&mut first).await.is_err(), "an open connection survived the cut");
        let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut during).await.is_err(), "a new connection got through the cut");

        let healed_at = Instant::now();
        proxy.restore();
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut after).await.unwrap();
        assert!(proxy.first_accept_since(healed_at).is_some());
    }
}
