//! The lane: a feed writes events straight to an idle socket's TCP stream, with one
//! non-blocking `send(2)` of bytes framed once for every socket (or one `sendmsg(2)` of all
//! the events it delivers at once: a burst still costs one system call per socket),
//! instead of queueing them in the socket's outbox and waking the socket's task to frame
//! and write them (issue 16: CPU per delivered event; that wake-up, the task's poll and
//! tungstenite's framing and copy were most of the hub's own code per delivery).
//!
//! The lane changes nothing a client can see: it is open only while the socket's writer would
//! write the event itself, next and alone:
//!
//! - the writer opens it only when it is parked with nothing queued, buffered or owed, and
//!   hands it the channels' positions ([`Position`], moved, not copied);
//! - every push to the outbox closes it (see `Outbox::push`), so whatever was queued goes out
//!   before any later event, as it did without the lane;
//! - every write that does not come from the lane (the writer's, or tungstenite's own pong or
//!   close reply from the read path) closes it first, in `GuardedIo` (src/server.rs), and first
//!   writes what the lane owes;
//! - an event goes through only when it is the channel's next seq (anything else is a gap or a
//!   duplicate: the outbox and the writer's machine deal with it), and as the delta frame when
//!   the socket saw its base, by the machine's own rule ([`Position::takes_delta`]).
//!
//! A write that takes only part of a frame leaves the rest owed: the lane closes and
//! the writer is nudged, and its next write (a flush, with the write deadline) sends the rest
//! first. What it did not take at all (a full socket buffer, or an error) goes to the
//! outbox, where the usual limits apply (the byte cap, the write deadline, 4008).
//!
//! The stream's descriptor is used only under the lane's lock and only while attached: the
//! connection's IO attaches it and detaches it (under the same lock) before closing it.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;
use uuid::Uuid;

use super::channel_map::ChannelMap;
use super::machine::Position;
use super::outbox::EventFrame;

/// One socket's lane; shared by its connection's IO, its outbox and the feeds it is
/// subscribed to (through the outbox).
#[derive(Default)]
pub struct Lane {
    state: Mutex<LaneState>,
}

#[derive(Default)]
struct LaneState {
    /// The connection's socket, while the connection's IO owns it.
    fd: Option<RawFd>,
    /// The writer is parked and nothing is queued, buffered or owed.
    open: bool,
    /// The joined channels' positions, the writer's machine's while it is parked.
    channels: ChannelMap<Position>,
    /// The rest of a frame a write took only part of; written before anything else.
    owed: Option<Box<Owed>>,
    /// Event frames sent through the lane since the writer last took its positions back.
    sent: u32,
}

/// Bytes of a frame still to be written. Boxed in the lane (one pointer): rare, and every
/// socket would otherwise carry a vector's room for it (memory per idle socket).
struct Owed(Vec<u8>);

/// What the lane sent of the events offered to it.
#[derive(Debug, PartialEq, Eq)]
pub struct Sent {
    /// The first this many went to the socket (the rest are the outbox's).
    pub frames: usize,
    /// The last of them only in part: the rest of it is owed, and the writer must be woken
    /// to send it.
    pub started: bool,
}

impl Sent {
    pub(super) const NONE: Sent = Sent { frames: 0, started: false };
}

/// Frames written with one `sendmsg(2)` at most (a burst: several events per socket).
const MAX_FRAMES_PER_SEND: usize = 64;

/// An event and its frames as they go on the wire, built once for every socket of its feed.
pub struct Wire {
    pub frame: Arc<EventFrame>,
    full: Vec<u8>,
    delta: Option<Vec<u8>>,
}

impl Wire {
    pub fn of(frame: Arc<EventFrame>) -> Self {
        Wire {
            full: text_frame(frame.text.as_bytes()),
            delta: frame.delta.as_ref().map(|delta| text_frame(delta.text.as_bytes())),
            frame,
        }
    }

    /// The bytes for a socket whose channel stands at `position`: the delta frame when it
    /// saw the delta's base (the machine's rule).
    fn bytes_for(&self, position: &Position) -> &[u8] {
        match &self.delta {
            Some(delta) if position.takes_delta(&self.frame) => delta,
            _ => &self.full,
        }
    }
}

/// A server's WebSocket text frame (final, unmasked: RFC 6455 section 5.2), header and
/// payload in one buffer.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x81);
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

impl Lane {
    fn state(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection's IO owns `fd` from now on.
    pub fn attach(&self, fd: RawFd) {
        self.state().fd = Some(fd);
    }

    /// The connection's IO is about to close its socket: the lane never uses it again.
    pub fn detach(&self) {
        let mut state = self.state();
        state.fd = None;
        state.open = false;
    }

    /// The writer parks: the lane opens with the channels' positions (moved out of
    /// `channels`). False (and nothing moved) when it cannot open: no socket, or bytes owed.
    /// Only the outbox calls this, under its own lock, with its queue empty.
    pub(super) fn open(&self, channels: &mut ChannelMap<Position>) -> bool {
        let mut state = self.state();
        if state.fd.is_none() || state.owed.is_some() {
            return false;
        }
        debug_assert!(state.channels.is_empty(), "the lane was opened twice");
        std::mem::swap(&mut state.channels, channels);
        state.open = true;
        true
    }

    /// The writer wakes (after an [`Lane::open`] that returned true): the lane closes and
    /// the positions, moved on by what it sent, go back to `channels`. Returns how many
    /// event frames it sent.
    pub(super) fn take_back(&self, channels: &mut ChannelMap<Position>) -> u32 {
        let mut state = self.state();
        state.open = false;
        std::mem::swap(&mut state.channels, channels);
        std::mem::take(&mut state.sent)
    }

    /// Something was queued for the writer: nothing may overtake it.
    pub(super) fn close(&self) {
        self.state().open = false;
    }

    /// Offers `wires`, consecutive events of `project`, to the socket: those that continue
    /// the channel go out, several with one `sendmsg(2)`, until one is not taken whole.
    pub(super) fn send(&self, project: Uuid, wires: &[Wire]) -> Sent {
        let mut state = self.state();
        let state = &mut *state;
        let (true, Some(fd)) = (state.open, state.fd) else { return Sent::NONE };
        let Some(position) = state.channels.get_mut(&project) else { return Sent::NONE };
        let mut sent = Sent::NONE;
        while sent.frames < wires.len() {
            // The events that continue the channel (anything else is the writer's: a gap or
            // a duplicate), at most a sendmsg's worth.
            let mut slices = [IoSlice::new(&[]); MAX_FRAMES_PER_SEND];
            let mut group = 0;
            for (slice, wire) in slices.iter_mut().zip(&wires[sent.frames..]) {
                if wire.frame.seq != position.next + group as i64 {
                    break;
                }
                *slice = IoSlice::new(wire.bytes_for(position));
                group += 1;
            }
            if group == 0 {
                break;
            }
            let total: usize = slices[..group].iter().map(|slice| slice.len()).sum();
            // Nothing taken (a full socket buffer) or an error: the writer finds out itself.
            let taken = send_now(fd, &slices[..group]).unwrap_or(0);
            let mut left = taken;
            for slice in &slices[..group] {
                if left == 0 {
                    break;
                }
                if left < slice.len() {
                    state.owed = Some(Box::new(Owed(slice[left..].to_vec())));
                    sent.started = true;
                }
                left = left.saturating_sub(slice.len());
                position.next += 1;
                state.sent += 1;
                sent.frames += 1;
            }
            if taken == total {
                continue;
            }
            // The socket is full or gone: the rest, and everything after, is the writer's.
            state.open = false;
            break;
        }
        sent
    }

    /// Before any other write to the socket: closes the lane and writes what it owes.
    pub fn poll_owed<W: AsyncWrite + Unpin>(&self, cx: &mut Context<'_>, io: &mut W) -> Poll<io::Result<()>> {
        let mut state = self.state();
        state.open = false;
        while let Some(Owed(owed)) = state.owed.as_deref_mut() {
            let n = ready!(Pin::new(&mut *io).poll_write(cx, owed))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            owed.drain(..n);
            if owed.is_empty() {
                state.owed = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// One non-blocking write of `slices` to `fd`: `send(2)` for one slice (a paced event, the
/// common case: `sendmsg(2)` costs some 280 ns more per call here, in copying and checking
/// its header and vector: docs/BENCHMARKS.md, 2026-12-01 10:32), `sendmsg(2)` for several.
#[allow(unsafe_code)]
fn send_now(fd: RawFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: every slice is a valid buffer of its length for the call, and `IoSlice` is
    // ABI-compatible with `iovec` (std's guarantee on Unix); the header is zeroed apart from
    // its vector. `fd` is an open socket: the lane uses it only under its lock while it is
    // attached, and the connection's IO, which owns the socket, detaches it under that lock
    // before closing it (so it cannot be closed, or its number reused, during this call).
    let n = unsafe {
        if let [slice] = slices {
            libc::send(fd, slice.as_ptr().cast(), slice.len(), flags)
        } else {
            let mut header: libc::msghdr = std::mem::zeroed();
            header.msg_iov = slices.as_ptr() as *mut libc::iovec;
            header.msg_iovlen = slices.len() as _;
            libc::sendmsg(fd, &header, flags)
        }
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::realtime::outbox::DeltaFrame;

    fn wire(seq: i64, text: &str, delta: Option<(i64, &str)>) -> Wire {
        Wire::of(Arc::new(EventFrame {
            seq,
            event_type: "file:update".into(),
            text: text.to_string().into(),
            committed_at_us: 0,
            delta: delta.map(|(base_seq, text)| DeltaFrame { base_seq, text: text.to_string().into() }),
        }))
    }

    fn sent(frames: usize, started: bool) -> Sent {
        Sent { frames, started }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    /// Reads one server text frame's payload.
    async fn read_frame(client: &mut TcpStream) -> String {
        let mut head = [0u8; 2];
        client.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0], 0x81, "a final text frame");
        let len = match head[1] {
            126 => usize::from(client.read_u16().await.unwrap()),
            127 => client.read_u64().await.unwrap() as usize,
            n => usize::from(n),
        };
        let mut payload = vec![0; len];
        client.read_exact(&mut payload).await.unwrap();
        String::from_utf8(payload).unwrap()
    }

    fn joined(project: Uuid, next: i64) -> ChannelMap<Position> {
        let mut channels = ChannelMap::default();
        channels.insert(project, Position { next, from: next });
        channels
    }

    #[tokio::test]
    async fn an_open_lane_sends_only_what_continues_the_channel_and_gives_the_positions_back() {
        let (server, mut client) = pair().await;
        let (lane, project) = (Lane::default(), Uuid::new_v4());
        let send = |wires: &[Wire]| lane.send(project, wires);
        // Closed (never opened, or not attached): nothing goes through.
        assert_eq!(send(&[wire(5, "five", None)]), sent(0, false));
        let mut channels = joined(project, 5);
        assert!(!lane.open(&mut channels), "no socket attached");
        lane.attach(server.as_raw_fd());
        assert!(lane.open(&mut channels));
        assert!(channels.is_empty(), "the positions moved to the lane");
        assert_eq!(send(&[wire(6, "gap", None)]), sent(0, false), "a gap is the writer's");
        assert_eq!(send(&[wire(5, "five", None)]), sent(1, false));
        assert_eq!(send(&[wire(5, "five again", None)]), sent(0, false), "a duplicate is the writer's");
        assert_eq!(send(&[wire(9, "other project", None)]), sent(0, false));
        // Several at once; the delta goes out only when its base came on this socket since
        // the join (5 on); a gap inside ends what the lane takes.
        let burst = [
            wire(6, "six", Some((4, "delta on 4"))),
            wire(7, "seven", Some((6, "delta on 6"))),
            wire(8, "eight", None),
            wire(10, "ten", None),
        ];
        assert_eq!(send(&burst), sent(3, false));
        assert_eq!(lane.take_back(&mut channels), 4);
        assert_eq!(channels.get(&project).map(|p| p.next), Some(9));
        assert_eq!(send(&[wire(9, "closed", None)]), sent(0, false), "taken back: closed");
        for expected in ["five", "six", "delta on 6", "eight"] {
            assert_eq!(read_frame(&mut client).await, expected);
        }
        // Closed by a push, or detached by the IO: nothing goes through either.
        assert!(lane.open(&mut channels));
        lane.close();
        assert_eq!(send(&[wire(9, "nine", None)]), sent(0, false));
        lane.take_back(&mut channels);
        assert!(lane.open(&mut channels));
        lane.detach();
        assert_eq!(send(&[wire(9, "nine", None)]), sent(0, false));
    }

    #[tokio::test]
    async fn what_a_full_socket_did_not_take_is_written_before_anything_else() {
        let (mut server, mut client) = pair().await;
        let (lane, project) = (Lane::default(), Uuid::new_v4());
        lane.attach(server.as_raw_fd());
        // Bursts of three 40 KiB frames until the socket takes only part of one (the client
        // reads nothing).
        let text = "x".repeat(40 * 1024);
        let mut channels = joined(project, 1);
        assert!(lane.open(&mut channels));
        let mut next = 1;
        loop {
            let burst: Vec<Wire> = (next..next + 3).map(|seq| wire(seq, &text, None)).collect();
            let Sent { frames, started } = lane.send(project, &burst);
            next += frames as i64;
            if started {
                assert!(frames > 0);
                break;
            }
            assert_eq!(frames, 3, "a full buffer takes part of a frame first (seq {next})");
        }
        assert_eq!(lane.send(project, &[wire(next, &text, None)]), sent(0, false), "closed once a frame is owed");
        let mut back = ChannelMap::default();
        let frames = next - 1;
        assert_eq!(i64::from(lane.take_back(&mut back)), frames);
        assert_eq!(back.get(&project).map(|p| p.next), Some(next));
        assert!(!lane.open(&mut back), "bytes owed: the lane stays closed");
        // The writer's next write sends the owed rest first, then its own frame.
        let reader = tokio::spawn(async move {
            let mut payloads = Vec::new();
            for _ in 0..=frames {
                payloads.push(read_frame(&mut client).await);
            }
            payloads
        });
        std::future::poll_fn(|cx| lane.poll_owed(cx, &mut server)).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut server, &text_frame(b"the writer's")).await.unwrap();
        let payloads = reader.await.unwrap();
        assert!(payloads[..frames as usize].iter().all(|p| *p == text), "every lane frame arrived whole");
        assert_eq!(payloads[frames as usize], "the writer's");
        assert!(lane.open(&mut back), "nothing owed any more");
    }

    #[test]
    fn frames_carry_their_length_in_the_smallest_form() {
        assert_eq!(text_frame(b"hi"), [0x81, 2, b'h', b'i']);
        let medium = text_frame(&[b'a'; 300]);
        assert_eq!(medium[..4], [0x81, 126, 1, 44]);
        assert_eq!(medium.len(), 304);
        let large = text_frame(&vec![b'a'; 70_000]);
        assert_eq!(large[..10], [0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }
}
