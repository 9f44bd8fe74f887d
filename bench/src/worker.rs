//! A client process of the `sockets_100k` scenario (`synchub-bench --client-worker`): one
//! process may hold at most ~20,000 descriptors here, so 100,000 sockets need several. It
//! opens its share of joined sockets to one hub from its own loopback source addresses
//! (handshake and join with tokio-tungstenite), then reads all of them on one thread from
//! one epoll set ([`Receiver`]), and reports on stdout; the parent announces each write's
//! send time on stdin.
//!
//! stdin: `t WALL_US` (the next event's write is sent now); `r SEQ` (the parent stopped
//! waiting for SEQ: report what arrived so far); closing stdin ends the worker.
//! stdout: `ready N SECS` once every socket joined; per event, once every socket has it,
//! `done SEQ P50_US P99_US MAX_US` (send → arrival over this worker's sockets); after
//! `r SEQ`, `partial SEQ COUNT P50_US P99_US MAX_US` over the COUNT sockets that had it.

use std::collections::HashMap;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsFd as _, OwnedFd};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use rustix::buffer::spare_capacity;
use rustix::event::epoll;

use crate::harness;
use crate::scenarios::fanout::event_seq;
use crate::stats::Latencies;

pub struct Args {
    pub hub: SocketAddr,
    pub project: uuid::Uuid,
    pub sockets: usize,
    /// Source addresses 127.0.{net}.2 … 127.0.{net}.9.
    pub net: u8,
    pub token: String,
}

fn wall_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let Args { hub, project, sockets, net, token } = args;
    let token = &token;
    let announced = Arc::new(AtomicI64::new(0));
    // Per seq: send → arrival latencies of this worker's sockets so far.
    let arrivals: Arc<Mutex<HashMap<usize, Latencies>>> = Arc::new(Mutex::new(HashMap::new()));
    // Each socket goes to the lean receive loop as soon as it joined: waiting for all of
    // them first left the early ones unread for as long as the rest took to join, and the
    // hub closes a peer that answered no ping for 60 s (100,000 sockets took 88 s to join,
    // and a third of them were closed as idle before the first event).
    let (joined, joined_rx) = std::sync::mpsc::channel();
    let receiver = Receiver::new(joined_rx, sockets, announced.clone(), arrivals.clone())?;
    // A plain thread, never joined: the worker ends with its stdin (below).
    std::thread::spawn(move || {
        if let Err(err) = receiver.run() {
            println!("error receive loop: {err}");
        }
    });
    let mut opening = std::pin::pin!(
        futures_util::stream::iter(0..sockets)
            .map(|i| async move {
                let source = Ipv4Addr::new(127, 0, net, 2 + (i % harness::SOURCE_ADDRESSES) as u8);
                let mut last = None;
                for attempt in 0..5u64 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(250 * attempt)).await;
                    }
                    match harness::connect_joined(hub, token, Some(source), project).await {
                        Ok(ws) => return Ok(ws),
                        Err(err) => last = Some(err),
                    }
                }
                Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")).context(format!("socket {i}")))
            })
            .buffer_unordered(64)
    );
    while let Some(ws) = opening.next().await {
        // Joined: from here on the connection is read by the receive loop.
        joined.send(detach(ws?)?).map_err(|_| anyhow::anyhow!("the receive loop ended"))?;
    }
    drop(joined);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready {sockets} {:.1}", started.elapsed().as_secs_f64())?;
        out.flush()?;
    }
    // stdin on a plain thread (the bench's tokio has no io-std); its end ends the worker.
    let reader = std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if let Some(us) = line.strip_prefix("t ").and_then(|t| t.trim().parse().ok()) {
                announced.store(us, Ordering::Relaxed);
            } else if let Some(seq) = line.strip_prefix("r ").and_then(|t| t.trim().parse::<usize>().ok()) {
                let line = {
                    let arrivals = arrivals.lock().unwrap_or_else(|p| p.into_inner());
                    match arrivals.get(&seq) {
                        Some(seen) => format!("partial {seq} {} {}", seen.count(), figures(seen)),
                        None => format!("partial {seq} 0 0 0 0"),
                    }
                };
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
    });
    tokio::task::spawn_blocking(move || reader.join()).await?.map_err(|_| anyhow::anyhow!("stdin reader panicked"))
}

/// The joined socket's TCP connection, taken from tungstenite: a duplicate of its
/// descriptor (the stream's own one is closed when it is dropped, sending nothing). What
/// tungstenite may hold unread is no event: the hub sends none before the first write,
/// which comes after every worker reported ready (at most a ping, answered by the next one).
fn detach(ws: harness::Ws) -> anyhow::Result<TcpStream> {
    let fd = ws.get_ref().as_fd().try_clone_to_owned()?;
    drop(ws);
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// Reads every socket of the worker on one thread from one epoll set, parsing the hub's
/// frames itself: the client side of the measurement should cost as little CPU as it can,
/// since it shares the two cores with the hubs (with tokio-tungstenite, a task per socket,
/// the clients took ~7 µs per delivered frame, ~half of it their own code).
struct Receiver {
    epoll: OwnedFd,
    /// Sockets still joining arrive here; closed once every socket joined.
    joining: Option<std::sync::mpsc::Receiver<TcpStream>>,
    conns: Vec<Conn>,
    sockets: usize,
    announced: Arc<AtomicI64>,
    arrivals: Arc<Mutex<HashMap<usize, Latencies>>>,
}

struct Conn {
    stream: TcpStream,
    /// Bytes of a frame not yet complete (empty nearly always: a frame arrives whole).
    partial: Vec<u8>,
}

impl Receiver {
    fn new(
        joining: std::sync::mpsc::Receiver<TcpStream>,
        sockets: usize,
        announced: Arc<AtomicI64>,
        arrivals: Arc<Mutex<HashMap<usize, Latencies>>>,
    ) -> anyhow::Result<Self> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let conns = Vec::with_capacity(sockets);
        Ok(Receiver { epoll, joining: Some(joining), conns, sockets, announced, arrivals })
    }

    /// Adds the sockets that joined since the last look.
    fn take_joined(&mut self) -> anyhow::Result<()> {
        let Some(joining) = &self.joining else { return Ok(()) };
        loop {
            match joining.try_recv() {
                Ok(stream) => {
                    let i = self.conns.len() as u64;
                    epoll::add(&self.epoll, &stream, epoll::EventData::new_u64(i), epoll::EventFlags::IN)?;
                    self.conns.push(Conn { stream, partial: Vec::new() });
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(()),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.joining = None;
                    return Ok(());
                }
            }
        }
    }

    fn run(mut self) -> anyhow::Result<()> {
        let mut ready: Vec<epoll::Event> = Vec::with_capacity(1024);
        let mut buf = vec![0u8; 64 * 1024];
        let mut seqs = Vec::new();
        // While sockets are still joining, epoll_wait wakes every 20 ms to take them in.
        let joining_tick = rustix::event::Timespec { tv_sec: 0, tv_nsec: 20_000_000 };
        loop {
            self.take_joined()?;
            let timeout = self.joining.as_ref().map(|_| &joining_tick);
            ready.clear();
            match epoll::wait(&self.epoll, spare_capacity(&mut ready), timeout) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(err) => return Err(err.into()),
            }
            for event in &ready {
                let i = event.data.u64() as usize;
                let conn = &mut self.conns[i];
                seqs.clear();
                match conn.stream.read(&mut buf) {
                    Ok(0) => {
                        epoll::delete(&self.epoll, &conn.stream)?;
                        continue;
                    }
                    Ok(n) => conn.received(&buf[..n], &mut seqs),
                    Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => continue,
                    Err(_) => {
                        epoll::delete(&self.epoll, &conn.stream)?;
                        continue;
                    }
                }
                if !seqs.is_empty() {
                    self.arrived(&seqs);
                }
            }
        }
    }

    fn arrived(&self, seqs: &[usize]) {
        let now = wall_us();
        let sent = self.announced.load(Ordering::Relaxed);
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        for &seq in seqs {
            let seen = arrivals.entry(seq).or_default();
            seen.record_us((now - sent).max(1) as u64);
            if seen.count() as usize == self.sockets {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "done {seq} {}", figures(seen));
                let _ = out.flush();
            }
        }
    }
}

impl Conn {
    /// Takes `data` off the wire: every complete frame is handled (an event's seq goes to
    /// `seqs`, a ping is answered), the rest kept for the next read.
    fn received(&mut self, data: &[u8], seqs: &mut Vec<usize>) {
        if self.partial.is_empty() {
            let used = self.frames(data, seqs);
            self.partial.extend_from_slice(&data[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.partial);
            pending.extend_from_slice(data);
            let used = self.frames(&pending, seqs);
            pending.drain(..used);
            self.partial = pending;
        }
    }

    /// Handles the complete frames at the start of `data`; returns the bytes they took.
    fn frames(&mut self, data: &[u8], seqs: &mut Vec<usize>) -> usize {
        let mut used = 0;
        while let Some((opcode, payload, len)) = server_frame(&data[used..]) {
            match opcode {
                OP_TEXT => {
                    if let Some(seq) = std::str::from_utf8(payload).ok().and_then(event_seq) {
                        seqs.push(seq);
                    }
                }
                // The hub closes peers that stop answering its pings.
                OP_PING => {
                    let _ = self.stream.write_all(&client_frame(OP_PONG, payload));
                }
                _ => {}
            }
            used += len;
        }
        used
    }
}

const OP_TEXT: u8 = 0x1;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The first frame in `data` if it is complete: (opcode, payload, frame length). Frames
/// from a server are never masked (RFC 6455 section 5.1).
fn server_frame(data: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (&first, &second) = (data.first()?, data.get(1)?);
    let (header, len) = match second & 0x7f {
        126 => (4usize, u16::from_be_bytes(data.get(2..4)?.try_into().ok()?) as usize),
        127 => (10, u64::from_be_bytes(data.get(2..10)?.try_into().ok()?) as usize),
        len => (2, len as usize),
    };
    let payload = data.get(header..header.checked_add(len)?)?;
    Some((first & 0x0f, payload, header + len))
}

/// A final client frame (masked, as RFC 6455 requires of clients) of at most 125 bytes.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let mask = [0x5a, 0xc3, 0x3c, 0xa5];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// "P50_US P99_US MAX_US" of one event's arrivals.
fn figures(seen: &Latencies) -> String {
    format!("{} {} {}", seen.ms(0.5) * 1e3, seen.ms(0.99) * 1e3, seen.max_ms() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_of_each_length_form_are_read_whole_or_not_at_all() {
        let short = [0x81, 3, b'a', b'b', b'c'];
        assert_eq!(server_frame(&short), Some((OP_TEXT, &b"abc"[..], 5)));
        assert_eq!(server_frame(&short[..4]), None);
        let mut medium = vec![0x81, 126, 0x04, 0x00];
        medium.extend(std::iter::repeat_n(b'x', 1024));
        assert_eq!(server_frame(&medium).map(|(op, p, len)| (op, p.len(), len)), Some((OP_TEXT, 1024, 1028)));
        assert_eq!(server_frame(&medium[..1027]), None);
        let mut long = vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        long.extend(std::iter::repeat_n(b'y', 65536));
        assert_eq!(server_frame(&long).map(|(_, p, len)| (p.len(), len)), Some((65536, 65546)));
        // A length that cannot be in memory is never complete, and does not overflow.
        assert_eq!(server_frame(&[0x81, 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]), None);
    }

    #[test]
    fn a_pong_is_masked_and_unmasks_to_the_ping_payload() {
        let frame = client_frame(OP_PONG, b"hi");
        assert_eq!(frame[0], 0x80 | OP_PONG);
        assert_eq!(frame[1], 0x80 | 2);
        let mask = &frame[2..6];
        let payload: Vec<u8> = frame[6..].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        assert_eq!(payload, b"hi");
    }

    /// The hub closes a peer that answered no ping for 60 s: a socket that joined early
    /// must be read (its pings answered) while the worker's other sockets still join.
    #[test]
    fn a_joined_socket_answers_pings_while_others_are_still_joining() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut hub_side, _) = listener.accept().unwrap();
        client.set_nonblocking(true).unwrap();
        let (joined, joining) = std::sync::mpsc::channel();
        let receiver = Receiver::new(joining, 2, Arc::default(), Arc::default()).unwrap();
        std::thread::spawn(move || receiver.run());
        // One of two sockets joined; `joined` stays open (the other is still joining).
        joined.send(client).unwrap();
        hub_side.write_all(&[0x89, 2, b'h', b'i']).unwrap();
        hub_side.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut pong = [0u8; 8];
        hub_side.read_exact(&mut pong).unwrap();
        assert_eq!(pong[..], client_frame(OP_PONG, b"hi")[..]);
        drop(joined);
    }
}
