//! The watcher's loop: the container's output into its log and out to attached clients, and
//! the clients' input into the container, on one thread with `poll`.
//!
//! Clients (the daemon, for `attach`) connect to [`super::ATTACH_SOCKET`] and speak in frames:
//! one kind byte, a big-endian u32 length, the payload.
//! - shim to client: [`STDOUT`] or [`STDERR`] with output bytes;
//! - client to shim: [`STDIN`] with input, [`RESIZE`] with rows and columns (two big-endian
//!   u16), [`CLOSE_STDIN`] to end the container's input.
//!
//! A client that does not keep up loses its connection rather than stall the container.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::{Io, Log, write_line};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const RESIZE: u8 = 3;
pub const CLOSE_STDIN: u8 = 4;

/// Frames larger than this are refused (a client sends keystrokes and pastes, not files).
const MAX_FRAME: usize = 1 << 20;
/// Output a slow client may have pending before it is dropped.
const CLIENT_BACKLOG: usize = 4 << 20;
/// Input for the container that may wait for it to read.
const INPUT_BACKLOG: usize = 4 << 20;
/// Output held for the first client.
const HOLD_LIMIT: usize = 1 << 20;

/// One frame's bytes.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Takes the complete frames off the front of `buf`; `Err` for a frame too large.
pub fn take_frames(buf: &mut Vec<u8>) -> Result<Vec<(u8, Vec<u8>)>, String> {
    let mut frames = Vec::new();
    loop {
        if buf.len() < 5 {
            return Ok(frames);
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(format!("a frame of {len} bytes is too large"));
        }
        if buf.len() < 5 + len {
            return Ok(frames);
        }
        let kind = buf[0];
        let payload = buf[5..5 + len].to_vec();
        buf.drain(..5 + len);
        frames.push((kind, payload));
    }
}

struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    output: VecDeque<u8>,
}

struct Source {
    file: File,
    stream: &'static str,
    kind: u8,
    partial: Vec<u8>,
}

/// Serves until the container's output ends (every writer gone: it exited).
/// How long the loop waits without an event before it calls its idle hook.
const IDLE_AFTER_MS: u16 = 2_000;

pub(super) fn pump(io: Io, log: Log, hold: bool, on_idle: &mut dyn FnMut()) {
    let mut log = log;
    let Io {
        out,
        err,
        pty,
        stdin,
        attach,
    } = io;
    let listener = UnixListener::from(attach);
    let _ = listener.set_nonblocking(true);
    // The terminal is both an output and the input; a second descriptor for each role.
    let pty_input = pty.as_ref().and_then(|p| p.try_clone().ok());
    let mut sources: Vec<Source> = [(Some(out), "stdout", STDOUT), (Some(err), "stderr", STDERR)]
        .into_iter()
        .chain(std::iter::once((pty, "stdout", STDOUT)))
        .filter_map(|(fd, stream, kind)| {
            fd.map(|fd| Source {
                file: File::from(fd),
                stream,
                kind,
                partial: Vec::new(),
            })
        })
        .collect();
    let is_pty = pty_input.is_some();
    let mut input: Option<File> = pty_input.or(stdin).map(File::from);
    if let Some(f) = &input {
        let _ = set_nonblocking(f);
    }
    let mut pending_input: Vec<u8> = Vec::new();
    let mut close_input_when_sent = false;
    let mut clients: Vec<Client> = Vec::new();
    let mut held: Option<Vec<u8>> = hold.then(Vec::new);
    let mut buf = vec![0u8; 64 << 10];

    // Whether anything happened since `on_idle` last ran.
    let mut busy = true;
    while !sources.is_empty() {
        let mut fds: Vec<PollFd> = Vec::new();
        for s in &sources {
            fds.push(PollFd::new(s.file.as_fd(), PollFlags::POLLIN));
        }
        fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
        // Input waiting for the container is bounded: past the limit, clients are not read
        // until it drains.
        let take_input = pending_input.len() < INPUT_BACKLOG;
        for c in &clients {
            let mut flags = if take_input {
                PollFlags::POLLIN
            } else {
                PollFlags::empty()
            };
            if !c.output.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.stream.as_fd(), flags));
        }
        let input_polled = input.as_ref().filter(|_| !pending_input.is_empty());
        if let Some(f) = input_polled {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLOUT));
        }
        let timeout = if busy {
            PollTimeout::from(IDLE_AFTER_MS)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Err(_) => continue,
            Ok(0) => {
                drop(fds);
                on_idle();
                busy = false;
                continue;
            }
            Ok(_) => busy = true,
        }
        let ready: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        let (source_ready, rest) = ready.split_at(sources.len());
        let listener_ready = rest[0];
        let client_ready = &rest[1..1 + clients.len()];

        // Output: into the log, and out to every client (or held for the first).
        let mut ended = Vec::new();
        for (i, source) in sources.iter_mut().enumerate() {
            if source_ready[i].is_empty() {
                continue;
            }
            match source.file.read(&mut buf) {
                // A terminal whose last user closed it reads EIO: that is its end too.
                Ok(0) | Err(_) => ended.push(i),
                Ok(n) => {
                    let data = &buf[..n];
                    let message = frame(source.kind, data);
                    if let Some(h) = held.as_mut()
                        && h.len() + message.len() <= HOLD_LIMIT
                    {
                        h.extend_from_slice(&message);
                    }
                    for c in clients.iter_mut() {
                        c.output.extend(&message);
                    }
                    source.partial.extend_from_slice(data);
                    while let Some(end) = source.partial.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = source.partial.drain(..=end).collect();
                        write_line(&mut log, source.stream, &line);
                    }
                    // docker splits lines longer than 16 KiB.
                    while source.partial.len() >= 16 << 10 {
                        let part: Vec<u8> = source.partial.drain(..16 << 10).collect();
                        write_line(&mut log, source.stream, &part);
                    }
                }
            }
        }
        for i in ended.into_iter().rev() {
            let source = sources.remove(i);
            if !source.partial.is_empty() {
                write_line(&mut log, source.stream, &source.partial);
            }
        }
        let _ = log.flush();

        // New clients; the first one gets what was held.
        if !listener_ready.is_empty() {
            while let Ok((stream, _)) = listener.accept() {
                let _ = stream.set_nonblocking(true);
                let output: VecDeque<u8> = held.take().unwrap_or_default().into();
                clients.push(Client {
                    stream,
                    input: Vec::new(),
                    output,
                });
            }
        }

        // Clients: their frames in, pending output out.
        let mut gone = Vec::new();
        for (i, c) in clients.iter_mut().enumerate() {
            let flags = client_ready.get(i).copied().unwrap_or(PollFlags::empty());
            if flags.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                match c.stream.read(&mut buf) {
                    Ok(0) => gone.push(i),
                    Ok(n) => {
                        c.input.extend_from_slice(&buf[..n]);
                        match take_frames(&mut c.input) {
                            Ok(frames) => {
                                for (kind, payload) in frames {
                                    match kind {
                                        STDIN if input.is_some() => {
                                            pending_input.extend_from_slice(&payload)
                                        }
                                        RESIZE if is_pty && payload.len() == 4 => {
                                            if let Some(f) = &input {
                                                resize(f, &payload);
                                            }
                                        }
                                        CLOSE_STDIN if !is_pty => close_input_when_sent = true,
                                        _ => {}
                                    }
                                }
                            }
                            Err(_) => gone.push(i),
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => gone.push(i),
                }
            }
            if !c.output.is_empty() && !gone.contains(&i) {
                let (front, _) = c.output.as_slices();
                match c.stream.write(front) {
                    Ok(n) => {
                        c.output.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => gone.push(i),
                }
                if c.output.len() > CLIENT_BACKLOG {
                    gone.push(i);
                }
            }
        }
        gone.sort_unstable();
        gone.dedup();
        for i in gone.into_iter().rev() {
            clients.remove(i);
        }

        // Input for the container, as much as it takes now.
        if let Some(f) = input.as_mut() {
            while !pending_input.is_empty() {
                match f.write(&pending_input) {
                    Ok(n) => {
                        pending_input.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        pending_input.clear();
                        close_input_when_sent = true;
                    }
                }
            }
        }
        if close_input_when_sent && pending_input.is_empty() {
            input = None;
            close_input_when_sent = false;
        }
    }
    // The container is gone: hand out what is pending, briefly, then hang up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    for c in clients.iter_mut() {
        let _ = c.stream.set_nonblocking(false);
        let _ = c
            .stream
            .set_write_timeout(Some(std::time::Duration::from_millis(200)));
        while !c.output.is_empty() && std::time::Instant::now() < deadline {
            let (front, _) = c.output.as_slices();
            match c.stream.write(front) {
                Ok(n) if n > 0 => {
                    c.output.drain(..n);
                }
                _ => break,
            }
        }
    }
}

fn set_nonblocking(f: &File) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL)?);
    fcntl(f, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(|_| ())
}

/// Sets the terminal's size from a RESIZE payload (rows, columns).
fn resize(pty: &File, payload: &[u8]) {
    crate::runtime::console::set_size(
        pty,
        u16::from_be_bytes([payload[0], payload[1]]),
        u16::from_be_bytes([payload[2], payload[3]]),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    #[test]
    fn frames_round_trip_and_wait_for_their_whole() {
        let mut buf = frame(STDIN, b"ls\n");
        buf.extend(frame(RESIZE, &[0, 24, 0, 80]));
        let tail = frame(STDOUT, b"partial");
        buf.extend_from_slice(&tail[..4]);
        let frames = take_frames(&mut buf).unwrap();
        assert_eq!(
            frames,
            [(STDIN, b"ls\n".to_vec()), (RESIZE, vec![0, 24, 0, 80])]
        );
        assert_eq!(buf.len(), 4);
        buf.extend_from_slice(&tail[4..]);
        assert_eq!(
            take_frames(&mut buf).unwrap(),
            [(STDOUT, b"partial".to_vec())]
        );
        let mut huge = vec![STDIN];
        huge.extend_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert!(take_frames(&mut huge).is_err());
    }

    #[test]
    fn output_reaches_the_log_and_a_client_and_input_reaches_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let (err_r, err_w) = nix::unistd::pipe().unwrap();
        let (in_r, in_w) = nix::unistd::pipe().unwrap();
        let sock = dir.path().join("attach.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let io = Io {
            out: out_r,
            err: err_r,
            pty: None,
            stdin: Some(in_w),
            attach: OwnedFd::from(listener),
        };
        let log = Log::open(dir.path(), 0, 1).unwrap();
        let pumping = std::thread::spawn(move || pump(io, log, true, &mut || {}));
        // Output before anyone attached is held for the first client.
        File::from(out_w.try_clone().unwrap())
            .write_all(b"early\n")
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut client = UnixStream::connect(&sock).unwrap();
        client.write_all(&frame(STDIN, b"typed")).unwrap();
        client.write_all(&frame(CLOSE_STDIN, b"")).unwrap();
        let mut typed = String::new();
        File::from(in_r).read_to_string(&mut typed).unwrap();
        assert_eq!(typed, "typed", "stdin closes after its input");
        File::from(err_w).write_all(b"oops\n").unwrap();
        drop(out_w);
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        pumping.join().unwrap();
        let frames = take_frames(&mut got).unwrap();
        assert_eq!(
            frames,
            [(STDOUT, b"early\n".to_vec()), (STDERR, b"oops\n".to_vec())]
        );
        let log = std::fs::read_to_string(dir.path().join(super::super::LOG_FILE)).unwrap();
        assert!(
            log.contains("\"early\\n\"") && log.contains("\"stderr\""),
            "{log}"
        );
    }
}
