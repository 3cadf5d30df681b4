//! `/api/v1/containers`: create, start, stop, kill, wait, remove, list, inspect and logs.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{audited, caller_audit};
use super::error::{ApiError, Body as JsonBody, ErrorBody};
use crate::auth::{Action, Caller, Target};
use crate::engine::commit::CommitRequest;
use crate::engine::logs::{self, LogQuery};
use crate::engine::{ContainerConfig, ContainerView, EngineError};
use crate::startup::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(inspect, remove))
        .routes(routes!(start))
        .routes(routes!(stop))
        .routes(routes!(restart))
        .routes(routes!(kill))
        .routes(routes!(wait))
        .routes(routes!(container_logs))
        .routes(routes!(exec))
        .routes(routes!(stats))
        .routes(routes!(top))
        .routes(routes!(pause))
        .routes(routes!(unpause))
        .routes(routes!(rename))
        .routes(routes!(commit))
        .routes(routes!(prune))
}

/// Freezes a running container's processes.
#[utoipa::path(post, path = "/containers/{id}/pause", tag = "containers",
    responses((status = 200, body = ContainerView), (status = 409, body = ErrorBody)))]
async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ContainerView>, ApiError> {
    set_paused(state, caller, id, true).await
}

async fn set_paused(
    state: AppState,
    caller: Caller,
    id: String,
    paused: bool,
) -> Result<Json<ContainerView>, ApiError> {
    caller
        .require(Action::ContainerOperate, &Target::Container(id.clone()))
        .await?;
    let row = state.engine.set_paused(&id, paused).await?;
    let action = if paused {
        "container.pause"
    } else {
        "container.unpause"
    };
    audited(&state, &caller, action, &row.name).await?;
    Ok(Json(row.into()))
}

/// Thaws a paused container.
#[utoipa::path(post, path = "/containers/{id}/unpause", tag = "containers",
    responses((status = 200, body = ContainerView), (status = 409, body = ErrorBody)))]
async fn unpause(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ContainerView>, ApiError> {
    set_paused(state, caller, id, false).await
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct RenameQuery {
    /// The new name.
    pub name: String,
}

/// Gives a container another name.
#[utoipa::path(post, path = "/containers/{id}/rename", tag = "containers", params(RenameQuery),
    responses((status = 200, body = ContainerView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rename(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<RenameQuery>,
) -> Result<Json<ContainerView>, ApiError> {
    caller
        .require(Action::ContainerCreate, &Target::Container(id.clone()))
        .await?;
    let before = state.engine.get(&id).await?.name;
    let row = state.engine.rename(&id, &q.name).await?;
    audited(
        &state,
        &caller,
        "container.rename",
        &format!("{before} -> {}", row.name),
    )
    .await?;
    Ok(Json(row.into()))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Committed {
    /// The new image's manifest digest.
    pub digest: String,
}

/// Makes an image of a container's changes (`docker commit`): its writable layer on top of its
/// image, with the container's command, environment and settings as the image's config. A
/// running container is paused while its files are read unless `no_pause` is set.
#[utoipa::path(post, path = "/containers/{id}/commit", tag = "containers", request_body = CommitRequest,
    responses((status = 201, body = Committed), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn commit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<CommitRequest>,
) -> Result<(StatusCode, Json<Committed>), ApiError> {
    caller
        .require(Action::ContainerRead, &Target::Container(id.clone()))
        .await?;
    let target = request.repository.clone().unwrap_or_else(|| "*".into());
    caller
        .require(Action::ImageBuild, &Target::Image(target.clone()))
        .await?;
    let name = state.engine.get(&id).await?.name;
    let digest = state.engine.commit(&id, &request).await?;
    audited(
        &state,
        &caller,
        "container.commit",
        &format!("{name} -> {target} {digest}"),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(Committed { digest })))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PrunedContainers {
    pub removed: Vec<String>,
}

/// Removes every container that is not running.
#[utoipa::path(post, path = "/containers/prune", tag = "containers",
    responses((status = 200, body = PrunedContainers), (status = 403, body = ErrorBody)))]
async fn prune(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PrunedContainers>, ApiError> {
    caller
        .require(Action::ContainerRemove, &Target::Container("*".into()))
        .await?;
    let removed = state.engine.prune().await?;
    audited(
        &state,
        &caller,
        "container.prune",
        &format!("{} containers", removed.len()),
    )
    .await?;
    Ok(Json(PrunedContainers { removed }))
}

/// Runs a command in a running container; NDJSON: `{"stream","log"}` entries as it writes,
/// then `{"exit_code": N}`.
#[utoipa::path(post, path = "/containers/{id}/exec", tag = "containers",
    responses((status = 200, description = "NDJSON output, then the exit code", content_type = "application/x-ndjson"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn exec(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<crate::engine::ExecRequest>,
) -> Result<Response, ApiError> {
    caller
        .require(Action::ContainerExec, &Target::Container(id.clone()))
        .await?;
    let row = state.engine.get(&id).await?;
    let mut child = state.engine.exec(&row.id, &req).await?;
    let detail = format!("cmd={}", req.cmd.join(" "));
    let record = caller_audit(
        &caller,
        "container.exec",
        &format!("container:{}", row.name),
        &detail,
    );
    state.db.record_audit(&record).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(64);
    let pump = |reader: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
                stream: &'static str| {
        let tx = tx.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let Some(mut reader) = reader else { return };
            let mut buf = vec![0u8; 16 << 10];
            while let Ok(n) = reader.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let line = serde_json::json!({"stream": stream, "log": String::from_utf8_lossy(&buf[..n])});
                if tx.send(Ok(format!("{line}\n"))).await.is_err() {
                    break;
                }
            }
        })
    };
    let out = pump(child.stdout.take().map(|r| Box::new(r) as _), "stdout");
    let err = pump(child.stderr.take().map(|r| Box::new(r) as _), "stderr");
    tokio::spawn(async move {
        let _ = out.await;
        let _ = err.await;
        let code = match child.wait().await {
            Ok(status) => status
                .code()
                .map(i64::from)
                .or_else(|| {
                    std::os::unix::process::ExitStatusExt::signal(&status)
                        .map(|s| 128 + i64::from(s))
                })
                .unwrap_or(255),
            Err(_) => 255,
        };
        let _ = tx
            .send(Ok(format!("{}\n", serde_json::json!({"exit_code": code}))))
            .await;
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StatsQuery {
    /// Keep sending a reading every second until the container ends (NDJSON).
    #[serde(default)]
    pub stream: bool,
}

/// A running container's CPU time, memory and processes (one reading, or one per second).
#[utoipa::path(get, path = "/containers/{id}/stats", tag = "containers", params(StatsQuery),
    responses((status = 200, body = crate::engine::ContainerStats), (status = 409, body = ErrorBody)))]
async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<StatsQuery>,
) -> Result<Response, ApiError> {
    caller
        .require(Action::ContainerRead, &Target::Container(id.clone()))
        .await?;
    let first = state.engine.stats(&id).await?;
    if !q.stream {
        return Ok(Json(first).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
    let engine = state.engine.clone();
    tokio::spawn(async move {
        let mut reading = Ok(first);
        while let Ok(r) = reading {
            let line = format!("{}\n", serde_json::to_string(&r).expect("stats serialize"));
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            reading = engine.stats(&r.id).await;
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

/// The processes of a running container.
#[utoipa::path(get, path = "/containers/{id}/top", tag = "containers",
    responses((status = 200, body = [crate::engine::ProcessView]), (status = 409, body = ErrorBody)))]
async fn top(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<crate::engine::ProcessView>>, ApiError> {
    caller
        .require(Action::ContainerRead, &Target::Container(id.clone()))
        .await?;
    Ok(Json(state.engine.top(&id).await?))
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NoContainer(_)
            | EngineError::NoImage(_)
            | EngineError::NoVolume(_)
            | EngineError::NoNetwork(_) => ApiError::Missing(e.to_string()),
            EngineError::Invalid(_) | EngineError::Start { .. } => {
                ApiError::BadRequest(e.to_string())
            }
            EngineError::WrongState { .. } => ApiError::Conflict(e.to_string()),
            EngineError::Io { .. } => ApiError::Internal(e.to_string()),
            EngineError::Database(e) => ApiError::Database(e),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Also stopped containers.
    #[serde(default)]
    pub all: bool,
}

/// Lists running containers (all of them with `all=true`).
#[utoipa::path(get, path = "/containers", tag = "containers", params(ListQuery),
    responses((status = 200, body = [ContainerView]), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ContainerView>>, ApiError> {
    caller
        .require(Action::ContainerRead, &Target::Container("*".into()))
        .await?;
    let rows = state.db.list_containers(q.all).await?;
    Ok(Json(state.engine.views(rows).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateContainer {
    pub name: Option<String>,
    #[serde(flatten)]
    pub config: ContainerConfig,
}

/// Creates a container from a local image (not started).
#[utoipa::path(post, path = "/containers", tag = "containers",
    responses((status = 201, body = ContainerView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateContainer>,
) -> Result<(StatusCode, Json<ContainerView>), ApiError> {
    caller
        .require(Action::ContainerCreate, &Target::Container("*".into()))
        .await?;
    let row = state.engine.create(req.name.as_deref(), req.config).await?;
    audited(&state, &caller, "container.create", &row.name).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// A container's record and configuration.
#[utoipa::path(get, path = "/containers/{id}", tag = "containers",
    responses((status = 200, body = ContainerView), (status = 404, body = ErrorBody)))]
async fn inspect(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ContainerView>, ApiError> {
    caller
        .require(Action::ContainerRead, &Target::Container(id.clone()))
        .await?;
    let row = state.engine.get(&id).await?;
    Ok(Json(state.engine.view(row).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct RemoveQuery {
    /// Kill a running container first.
    #[serde(default)]
    pub force: bool,
    /// Remove its anonymous volumes too.
    #[serde(default)]
    pub volumes: bool,
}

/// Removes a container and its files.
#[utoipa::path(delete, path = "/containers/{id}", tag = "containers", params(RemoveQuery),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    caller
        .require(Action::ContainerRemove, &Target::Container(id.clone()))
        .await?;
    let row = state.engine.get(&id).await?;
    state.engine.remove(&row.id, q.force, q.volumes).await?;
    audited(&state, &caller, "container.remove", &row.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a container; an `execve` failure comes back as the error.
#[utoipa::path(post, path = "/containers/{id}/start", tag = "containers", params(StartQuery),
    responses((status = 200, body = ContainerView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<StartQuery>,
) -> Result<Json<ContainerView>, ApiError> {
    caller
        .require(Action::ContainerOperate, &Target::Container(id.clone()))
        .await?;
    let row = state.engine.start_as(&id, q.attach).await?;
    audited(&state, &caller, "container.start", &row.name).await?;
    Ok(Json(row.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StartQuery {
    /// The caller attaches right after: the output is kept for it from the first byte.
    #[serde(default)]
    pub attach: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StopQuery {
    /// Seconds between the stop signal and SIGKILL (default 10).
    pub timeout: Option<u64>,
}

/// Stops a container: SIGTERM, then SIGKILL after the timeout.
#[utoipa::path(post, path = "/containers/{id}/stop", tag = "containers", params(StopQuery),
    responses((status = 200, body = ContainerView), (status = 404, body = ErrorBody)))]
async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<Json<ContainerView>, ApiError> {
    caller
        .require(Action::ContainerOperate, &Target::Container(id.clone()))
        .await?;
    let timeout = stop_timeout(&state.engine.get(&id).await?, &q);
    let row = state.engine.stop(&id, timeout).await?;
    audited(&state, &caller, "container.stop", &row.name).await?;
    Ok(Json(row.into()))
}

/// How long a stop waits: the request's, else the container's, else the default.
fn stop_timeout(row: &crate::db::ContainerRow, q: &StopQuery) -> Duration {
    let configured = serde_json::from_str::<ContainerConfig>(&row.config)
        .ok()
        .and_then(|c| c.stop_timeout);
    q.timeout
        .or(configured)
        .map_or(crate::engine::DEFAULT_STOP_TIMEOUT, Duration::from_secs)
}

/// Stops a container (as `stop` does) and starts it again.
#[utoipa::path(post, path = "/containers/{id}/restart", tag = "containers", params(StopQuery),
    responses((status = 200, body = ContainerView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn restart(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<Json<ContainerView>, ApiError> {
    caller
        .require(Action::ContainerOperate, &Target::Container(id.clone()))
        .await?;
    let row = state.engine.get(&id).await?;
    let timeout = stop_timeout(&row, &q);
    if matches!(row.state.as_str(), "running" | "paused") {
        state.engine.stop(&row.id, timeout).await?;
    }
    let row = state.engine.start(&row.id).await?;
    audited(&state, &caller, "container.restart", &row.name).await?;
    Ok(Json(state.engine.view(row).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct KillQuery {
    /// Signal name or number (default SIGKILL).
    pub signal: Option<String>,
}

/// Sends a signal to a running container.
#[utoipa::path(post, path = "/containers/{id}/kill", tag = "containers", params(KillQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn kill(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<KillQuery>,
) -> Result<StatusCode, ApiError> {
    caller
        .require(Action::ContainerOperate, &Target::Container(id.clone()))
        .await?;
    state
        .engine
        .kill(&id, q.signal.as_deref().unwrap_or("SIGKILL"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WaitResult {
    pub exit_code: i64,
}

/// Waits for a container to end and returns its exit code.
#[utoipa::path(post, path = "/containers/{id}/wait", tag = "containers",
    responses((status = 200, body = WaitResult), (status = 404, body = ErrorBody)))]
async fn wait(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WaitResult>, ApiError> {
    caller
        .require(Action::ContainerRead, &Target::Container(id.clone()))
        .await?;
    Ok(Json(WaitResult {
        exit_code: state.engine.wait(&id).await?,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct LogsQuery {
    /// Keep the stream open and send lines as they come, until the container ends.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Which streams (both by default).
    pub stdout: Option<bool>,
    pub stderr: Option<bool>,
    /// Only lines written at or after this time (RFC 3339, or unix seconds).
    pub since: Option<String>,
    /// Only lines written before this time (RFC 3339, or unix seconds).
    pub until: Option<String>,
}

/// RFC 3339 or unix seconds.
fn parse_time(what: &str, text: &str) -> Result<std::time::SystemTime, ApiError> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(std::time::UNIX_EPOCH + Duration::from_secs(secs));
    }
    // A duration (`300s`, `5m`) is that long before now, by the daemon's clock.
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(std::time::SystemTime::now()
            .checked_sub(ago)
            .unwrap_or(std::time::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(text).map_err(|e| {
        ApiError::BadRequest(format!(
            "{what} {text:?} is not a time: give RFC 3339 (2026-11-28T10:00:00Z), unix seconds, or a duration before now (5m) ({e})"
        ))
    })
}

/// A container's output as NDJSON entries `{"log","stream","time"}`.
#[utoipa::path(get, path = "/containers/{id}/logs", tag = "containers", params(LogsQuery),
    responses((status = 200, description = "NDJSON log entries", content_type = "application/x-ndjson"), (status = 404, body = ErrorBody)))]
async fn container_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    caller
        .require(Action::ContainerLogs, &Target::Container(id.clone()))
        .await?;
    let row = state.engine.get(&id).await?;
    let query = LogQuery {
        stdout: q.stdout.unwrap_or(true),
        stderr: q.stderr.unwrap_or(true),
        tail: q.tail,
        since: q
            .since
            .as_deref()
            .map(|t| parse_time("since", t))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|t| parse_time("until", t))
            .transpose()?,
    };
    let path = state.engine.log_path(&row.id);
    let (entries, mut position) = logs::read(&path, &query)
        .await
        .map_err(|e| ApiError::Internal(format!("read the log of {}: {e}", row.name)))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(64);
    let engine = state.engine.clone();
    let follow = q.follow;
    tokio::spawn(async move {
        let line = |e: &logs::Entry| {
            format!(
                "{}\n",
                serde_json::json!({"log": e.log, "stream": e.stream, "time": e.time})
            )
        };
        for e in &entries {
            if tx.send(Ok(line(e))).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        // New lines are looked for every 50 ms, and at once when the container ends.
        let mut ended = engine.exit_watch(&row.id).await;
        loop {
            let running = engine
                .get(&row.id)
                .await
                .map(|r| r.state == "running" || r.state == "paused")
                .unwrap_or(false);
            if let Ok((more, next)) = logs::read_from(&path, position, &query).await {
                position = next;
                for e in &more {
                    if tx.send(Ok(line(e))).await.is_err() {
                        return;
                    }
                }
            }
            // A client that went away (a page closed) ends the follow even while the
            // container prints nothing.
            if !running || tx.is_closed() {
                return;
            }
            match &mut ended {
                Some(rx) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = rx.changed() => {}
                        _ = tx.closed() => return,
                    }
                }
                None => tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = tx.closed() => return,
                },
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}
