//! Interactive sessions over WebSockets: `GET /containers/{id}/attach/ws` (the container's own
//! terminal or stdio, through its shim) and `GET /containers/{id}/exec/ws` (a new process,
//! with or without a terminal). The CLI's `run -it`, `attach` and `exec -it` use them, and so
//! can a browser terminal.
//!
//! Messages, both ways:
//! - server to client, binary: one stream byte (1 stdout, 2 stderr) and the bytes;
//!   text: `{"exit_code": N}` when an exec ends, `{"error": "…"}` when it cannot start;
//! - client to server, binary: input for the program; text: `{"resize": {"rows": R, "cols": C}}`
//!   or `{"close_stdin": true}`; for exec the first message is the text
//!   `{"cmd": […], "env": […], "user": …, "working_dir": …, "tty": bool, "rows": R, "cols": C}`.
//!
//! A request that carries an `Origin` must come from this server's own origin (a page elsewhere
//! cannot use a signed-in browser's cookie to open a terminal).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{audited, caller_audit};
use super::error::{ApiError, ErrorBody};
use crate::auth::{Action, Caller, Target};
use crate::engine::ExecRequest;
use crate::engine::shim::attach::{CLOSE_STDIN, RESIZE, STDIN, frame, take_frames};
use crate::startup::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(attach_ws))
        .routes(routes!(exec_ws))
}

/// Refuses a cross-site WebSocket: an `Origin` whose host is not the `Host` asked for.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get("origin").and_then(|o| o.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    if origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "a terminal may only be opened from this server's own pages (origin {origin})"
        )))
    }
}

/// A control message from the client.
#[derive(Debug, Deserialize)]
struct Control {
    resize: Option<Size>,
    #[serde(default)]
    close_stdin: bool,
}

#[derive(Debug, Deserialize)]
struct Size {
    rows: u16,
    cols: u16,
}

fn resize_payload(size: &Size) -> Vec<u8> {
    let mut p = size.rows.to_be_bytes().to_vec();
    p.extend_from_slice(&size.cols.to_be_bytes());
    p
}

/// Attaches to a running container's terminal or stdio (see the module's messages).
#[utoipa::path(get, path = "/containers/{id}/attach/ws", tag = "containers",
    responses((status = 101, description = "a WebSocket session"), (status = 409, body = ErrorBody)))]
async fn attach_ws(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    caller
        .require(Action::ContainerExec, &Target::Container(id.clone()))
        .await?;
    same_origin(&headers)?;
    let (row, dir) = state.engine.attach_socket(&id).await?;
    let cannot =
        |e: std::io::Error| ApiError::Conflict(format!("cannot attach to {}: {e}", row.name));
    let dir = std::fs::File::open(&dir).map_err(cannot)?;
    let socket = crate::engine::shim::short_path(&dir, crate::engine::shim::ATTACH_SOCKET);
    let shim = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(cannot)?;
    drop(dir);
    audited(&state, &caller, "container.attach", &row.name).await?;
    Ok(upgrade.on_upgrade(move |ws| bridge_shim(ws, shim)))
}

/// Carries frames between the shim and the client until either side ends.
async fn bridge_shim(ws: WebSocket, shim: tokio::net::UnixStream) {
    let (mut to_client, mut from_client) = ws.split();
    let (mut shim_read, mut shim_write) = shim.into_split();
    let down = async {
        let mut buf = vec![0u8; 64 << 10];
        let mut pending = Vec::new();
        while let Ok(n) = shim_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
            let Ok(frames) = take_frames(&mut pending) else {
                break;
            };
            for (kind, payload) in frames {
                let mut message = Vec::with_capacity(payload.len() + 1);
                message.push(kind);
                message.extend_from_slice(&payload);
                if to_client
                    .send(Message::Binary(message.into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        let _ = to_client.send(Message::Close(None)).await;
    };
    let up = async {
        while let Some(Ok(message)) = from_client.next().await {
            let bytes = match message {
                Message::Binary(data) => frame(STDIN, &data),
                Message::Text(text) => match serde_json::from_str::<Control>(&text) {
                    Ok(Control {
                        resize: Some(size), ..
                    }) => frame(RESIZE, &resize_payload(&size)),
                    Ok(Control {
                        close_stdin: true, ..
                    }) => frame(CLOSE_STDIN, b""),
                    _ => continue,
                },
                Message::Close(_) => break,
                _ => continue,
            };
            if shim_write.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = down => {}
        _ = up => {}
    }
}

/// The first message of an exec session.
#[derive(Debug, Deserialize)]
struct ExecStart {
    #[serde(flatten)]
    request: ExecRequest,
    #[serde(default)]
    tty: bool,
    rows: Option<u16>,
    cols: Option<u16>,
}

/// Runs a process in a running container, interactively (see the module's messages).
#[utoipa::path(get, path = "/containers/{id}/exec/ws", tag = "containers",
    responses((status = 101, description = "a WebSocket session"), (status = 409, body = ErrorBody)))]
async fn exec_ws(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    caller
        .require(Action::ContainerExec, &Target::Container(id.clone()))
        .await?;
    same_origin(&headers)?;
    let row = state.engine.get(&id).await?;
    Ok(upgrade.on_upgrade(move |ws| exec_session(state, caller, row.id, ws)))
}

async fn exec_session(state: AppState, caller: Caller, id: String, mut ws: WebSocket) {
    let start = match ws.recv().await {
        Some(Ok(Message::Text(text))) => serde_json::from_str::<ExecStart>(&text)
            .map_err(|e| format!("the first message must describe the exec: {e}")),
        _ => Err("the first message must describe the exec".to_owned()),
    };
    let fail =
        |message: String| Message::Text(serde_json::json!({"error": message}).to_string().into());
    let start = match start {
        Ok(s) => s,
        Err(e) => {
            let _ = ws.send(fail(e)).await;
            return;
        }
    };
    let size = start.rows.zip(start.cols);
    let session = match state
        .engine
        .exec_interactive(&id, &start.request, start.tty, size)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            let _ = ws.send(fail(e.to_string())).await;
            return;
        }
    };
    if let Ok(row) = state.engine.get(&id).await {
        let record = caller_audit(
            &caller,
            "container.exec",
            &format!("container:{}", row.name),
            &format!("cmd={}", start.request.cmd.join(" ")),
        );
        let _ = state.db.record_audit(&record).await;
    }
    let code = run_exec(ws, session).await;
    tracing::debug!(container = %id, exit_code = code, "an interactive exec ended");
}

type Writer = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;
type Reader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// Pumps an exec session; returns the program's exit code (also sent to the client).
async fn run_exec(ws: WebSocket, mut session: crate::engine::ExecSession) -> i64 {
    let (mut to_client, mut from_client) = ws.split();
    let mut child = session
        .child
        .take()
        .expect("a started session has its helper");
    let resize_target = session.pty.as_ref().and_then(|m| m.try_clone().ok());
    // Where input goes and output comes from: the terminal, or the helper's pipes.
    let (mut input, outputs): (Option<Writer>, Vec<(u8, Reader)>) = match session.pty.take() {
        Some(master) => {
            let read = tokio::fs::File::from_std(std::fs::File::from(
                master.try_clone().expect("dup the terminal"),
            ));
            let write = tokio::fs::File::from_std(std::fs::File::from(master));
            (Some(Box::new(write)), vec![(1u8, Box::new(read) as _)])
        }
        None => {
            let stdin = child.stdin.take().map(|s| Box::new(s) as _);
            let mut outs: Vec<(u8, Reader)> = Vec::new();
            if let Some(o) = child.stdout.take() {
                outs.push((1, Box::new(o)));
            }
            if let Some(e) = child.stderr.take() {
                outs.push((2, Box::new(e)));
            }
            (stdin, outs)
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(16);
    let readers: Vec<_> = outputs
        .into_iter()
        .map(|(kind, mut reader)| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 << 10];
                // A terminal whose program is gone reads EIO: its end.
                while let Ok(n) = reader.read(&mut buf).await {
                    if n == 0 || tx.send((kind, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let down = async {
        while let Some((kind, data)) = rx.recv().await {
            let mut message = vec![kind];
            message.extend_from_slice(&data);
            if to_client
                .send(Message::Binary(message.into()))
                .await
                .is_err()
            {
                break;
            }
        }
        to_client
    };
    let up = async {
        while let Some(Ok(message)) = from_client.next().await {
            match message {
                Message::Binary(data) => {
                    if let Some(w) = input.as_mut()
                        && w.write_all(&data).await.is_err()
                    {
                        input = None;
                    }
                }
                Message::Text(text) => match serde_json::from_str::<Control>(&text) {
                    Ok(Control {
                        resize: Some(size), ..
                    }) => {
                        if let Some(fd) = &resize_target {
                            crate::runtime::console::set_size(fd, size.rows, size.cols);
                        }
                    }
                    Ok(Control {
                        close_stdin: true, ..
                    }) => input = None,
                    _ => {}
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    // Output ends when the program (and whatever shares its terminal) is gone; a client that
    // leaves first ends the session, and the helper with it.
    let mut to_client = tokio::select! {
        to_client = down => Some(to_client),
        _ = up => None,
    };
    for r in readers {
        r.abort();
    }
    if to_client.is_none() {
        // The client left: so does the program.
        let _ = child.start_kill();
    }
    let code = match child.wait().await {
        Ok(status) => status
            .code()
            .map(i64::from)
            .or_else(|| {
                std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + i64::from(s))
            })
            .unwrap_or(255),
        Err(_) => 255,
    };
    if let Some(to_client) = to_client.as_mut() {
        let _ = to_client
            .send(Message::Text(
                serde_json::json!({"exit_code": code}).to_string().into(),
            ))
            .await;
        let _ = to_client.send(Message::Close(None)).await;
    }
    code
}
