//! The client's side of interactive sessions (`run -it`, `exec -it`, `attach`): the local
//! terminal in raw mode, keystrokes and window sizes to the daemon's WebSocket, the program's
//! output back, and docker's detach keys (ctrl-p ctrl-q unless told otherwise).

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::client::{ClientError, Io};

/// docker's default detach sequence.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// Reads docker's `--detach-keys` (`ctrl-p,ctrl-q`, `ctrl-a,x`…) as the bytes typed.
pub fn parse_detach_keys(text: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("invalid detach keys {text:?}: give keys like ctrl-p,ctrl-q or ctrl-a,x");
    let mut keys = Vec::new();
    for key in text.split(',') {
        let key = key.trim();
        if let Some(c) = key.strip_prefix("ctrl-") {
            let c = c
                .chars()
                .next()
                .filter(|_| c.chars().count() == 1)
                .ok_or_else(bad)?;
            keys.push(match c {
                'a'..='z' => c as u8 - b'a' + 1,
                '@' => 0,
                '[' => 27,
                '\\' => 28,
                ']' => 29,
                '^' => 30,
                '_' => 31,
                _ => return Err(bad()),
            });
        } else if key.len() == 1 && key.is_ascii() {
            keys.push(key.as_bytes()[0]);
        } else {
            return Err(bad());
        }
    }
    if keys.is_empty() {
        return Err(bad());
    }
    Ok(keys)
}

/// The local terminal in raw mode while this lives; restored on drop (and on panic).
pub struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    /// Raw mode for stdin, when it is a terminal.
    pub fn enter() -> Option<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin().as_fd(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// The local terminal's size (rows, columns), when stdout or stdin is one.
pub fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        // SAFETY: TIOCGWINSZ writes a winsize into the valid pointer we pass.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

fn resize_message(rows: u16, cols: u16) -> Message {
    Message::Text(
        serde_json::json!({"resize": {"rows": rows, "cols": cols}})
            .to_string()
            .into(),
    )
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// An exec's program exited with this code.
    Exited(i64),
    /// The daemon closed the session (the container ended, or went away).
    Closed,
    /// The user typed the detach keys: the program goes on.
    Detached,
}

/// What a session sends and watches.
pub struct SessionOptions {
    /// Send stdin (otherwise only watch).
    pub stdin: bool,
    /// The program has a terminal: send window sizes.
    pub tty: bool,
    /// Recognized in the input, when stdin is a terminal.
    pub detach_keys: Vec<u8>,
}

/// [`session`] with the local terminal in raw mode while it lasts, when the program has a
/// terminal and gets our input.
pub async fn run_session(
    ws: WebSocketStream<Box<dyn Io>>,
    options: SessionOptions,
) -> Result<Ended, ClientError> {
    let raw = if options.tty && options.stdin {
        RawMode::enter()
    } else {
        None
    };
    let ended = session(ws, options).await;
    drop(raw);
    ended
}

/// Runs a session until the daemon ends it or the user detaches.
pub async fn session(
    ws: WebSocketStream<Box<dyn Io>>,
    options: SessionOptions,
) -> Result<Ended, ClientError> {
    let failed = |e: tokio_tungstenite::tungstenite::Error| ClientError::Input {
        reason: format!("the session with the daemon broke off: {e}"),
    };
    let (mut to_daemon, mut from_daemon) = ws.split();
    // Keystrokes are read by a thread of their own; it is left behind when the session ends.
    let (keys_tx, mut keys) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(16);
    if options.stdin {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = keys_tx.blocking_send(None);
                        return;
                    }
                    Ok(n) => {
                        if keys_tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let detach_enabled = options.stdin && std::io::stdin().is_terminal();
    let mut winch = if options.tty {
        if let Some((rows, cols)) = terminal_size() {
            to_daemon
                .send(resize_message(rows, cols))
                .await
                .map_err(failed)?;
        }
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()
    } else {
        None
    };
    let mut matched = 0usize;
    let mut stdin_open = options.stdin;
    let mut exit_code = None;
    loop {
        tokio::select! {
            message = from_daemon.next() => match message {
                Some(Ok(Message::Binary(data))) if !data.is_empty() => {
                    let (stream, bytes) = (data[0], &data[1..]);
                    if stream == 2 {
                        let mut err = std::io::stderr();
                        let _ = err.write_all(bytes);
                        let _ = err.flush();
                    } else {
                        let mut out = std::io::stdout();
                        let _ = out.write_all(bytes);
                        let _ = out.flush();
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    if let Some(code) = v["exit_code"].as_i64() {
                        exit_code = Some(code);
                    } else if let Some(error) = v["error"].as_str() {
                        return Err(ClientError::Input { reason: error.to_owned() });
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(failed(e)),
            },
            key = keys.recv(), if stdin_open => match key {
                Some(Some(bytes)) => {
                    if detach_enabled {
                        for b in &bytes {
                            if *b == options.detach_keys[matched] {
                                matched += 1;
                                if matched == options.detach_keys.len() {
                                    let _ = to_daemon.send(Message::Close(None)).await;
                                    return Ok(Ended::Detached);
                                }
                            } else {
                                matched = usize::from(*b == options.detach_keys[0]);
                            }
                        }
                    }
                    to_daemon
                        .send(Message::Binary(bytes.into()))
                        .await
                        .map_err(failed)?;
                }
                Some(None) | None => {
                    stdin_open = false;
                    if !options.tty {
                        to_daemon
                            .send(Message::Text(r#"{"close_stdin": true}"#.into()))
                            .await
                            .map_err(failed)?;
                    }
                }
            },
            Some(()) = async {
                match winch.as_mut() {
                    Some(w) => w.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some((rows, cols)) = terminal_size() {
                    to_daemon.send(resize_message(rows, cols)).await.map_err(failed)?;
                }
            }
        }
    }
    Ok(match exit_code {
        Some(code) => Ended::Exited(code),
        None => Ended::Closed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_read_as_docker_writes_them() {
        assert_eq!(
            parse_detach_keys(DEFAULT_DETACH_KEYS).unwrap(),
            [0x10, 0x11]
        );
        assert_eq!(parse_detach_keys("ctrl-a,x").unwrap(), [1, b'x']);
        assert_eq!(parse_detach_keys("ctrl-@,ctrl-[").unwrap(), [0, 27]);
        for bad in ["", "ctrl-", "ctrl-ab", "alt-x", "xy"] {
            assert!(parse_detach_keys(bad).is_err(), "{bad:?}");
        }
    }
}
