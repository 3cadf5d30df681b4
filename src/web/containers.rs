//! The Containers pages: the list (filter, search, actions), a container's page (inspect, live
//! logs, stats, terminal) and the "create container" form; and the Volumes and Networks pages. Reads go through the engine as the JSON API's do;
//! every action is a call of the JSON API from `static/containers.js` with the session's CSRF
//! token, so the same rights and audit apply, and a viewer is shown no buttons.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use serde::Deserialize;

use super::error::WebError;
use super::session::WebUser;
use crate::auth::{Action, Target, authorize};
use crate::engine::ContainerView;
use crate::startup::AppState;

/// One row of the Containers page.
pub struct ContainerRow {
    pub id: String,
    pub short_id: String,
    pub name: String,
    pub image: String,
    pub state: String,
    pub status: String,
    pub ports: String,
    pub created: String,
    /// `12.5% · 3.4 MiB` for a running container (the CPU share since the list was last
    /// drawn, `–` the first time), empty otherwise.
    pub usage: String,
}

/// The CPU time each container had when a list last measured it, when (ns), and the share
/// shown then, so the next drawing (the list refreshes itself) can show the share of a CPU
/// used in between. Lists drawn less than a second apart (two tabs) show the last share.
type CpuSample = (u64, u64, String);
static LAST_CPU: std::sync::Mutex<Option<std::collections::HashMap<String, CpuSample>>> =
    std::sync::Mutex::new(None);

/// The shortest time a share of a CPU is measured over.
const CPU_WINDOW_NS: u64 = 1_000_000_000;

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The usage text of each running container among `views`.
async fn usage_texts(
    state: &AppState,
    views: &[ContainerView],
) -> std::collections::HashMap<String, String> {
    let running: Vec<String> = views
        .iter()
        .filter(|v| v.state == "running" || v.state == "paused")
        .map(|v| v.id.clone())
        .collect();
    let usage = state.engine.usage(running).await;
    let mut last = LAST_CPU.lock().unwrap_or_else(|e| e.into_inner());
    let now = now_ns();
    let previous = last.get_or_insert_with(Default::default);
    let mut texts = std::collections::HashMap::new();
    for (id, (cpu, memory)) in usage {
        let share = match previous.get(&id) {
            Some((_, at, shown)) if now < at + CPU_WINDOW_NS => shown.clone(),
            Some((before, at, _)) if cpu >= *before => {
                format!("{:.1}%", (cpu - before) as f64 * 100.0 / (now - at) as f64)
            }
            _ => "–".to_owned(),
        };
        texts.insert(
            id.clone(),
            format!("{share} · {}", crate::host::human_bytes(memory)),
        );
        let fresh = previous
            .get(&id)
            .is_none_or(|(_, at, _)| now >= at + CPU_WINDOW_NS);
        if fresh {
            previous.insert(id, (cpu, now, share));
        }
    }
    // Forget containers long gone, so the map stays the size of what runs.
    if previous.len() > 4 * texts.len().max(256) {
        previous.retain(|id, _| texts.contains_key(id));
    }
    texts
}

/// What a user may do on these pages.
pub struct Rights {
    pub operate: bool,
    pub remove: bool,
    pub create: bool,
}

impl Rights {
    fn of(user: &WebUser) -> Rights {
        let may =
            |action| authorize(&user.principal, action, &Target::Container("*".into())).is_ok();
        Rights {
            operate: may(Action::ContainerOperate),
            remove: may(Action::ContainerRemove),
            create: may(Action::ContainerCreate),
        }
    }
}

fn require_read(user: &WebUser, id: &str) -> Result<(), WebError> {
    authorize(
        &user.principal,
        Action::ContainerRead,
        &Target::Container(id.into()),
    )
    .map_err(|d| WebError::Forbidden(d.to_string()))
}

#[derive(Template, WebTemplate)]
#[template(path = "containers.html")]
pub struct ContainersPage {
    pub user: WebUser,
    pub rights: Rights,
    pub containers: Vec<ContainerRow>,
    /// How many there are before the filter, and after it.
    pub total: usize,
    pub matching: usize,
    pub filter_state: String,
    pub search: String,
    pub states: Vec<&'static str>,
    /// This page's first row (from 1) and last, and the links to the others (empty for none).
    pub first: usize,
    pub last: usize,
    pub previous: String,
    pub next: String,
    /// This very page (filter, search, page), which htmx fetches again to refresh the rows.
    pub refresh_url: String,
}

/// Rows on one page of the Containers list.
const PAGE_ROWS: usize = 100;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// `running`, `paused`, `exited`, `created`, or empty for all.
    #[serde(default)]
    state: String,
    /// A part of the name, id or image.
    #[serde(default)]
    q: String,
    /// The page, from 1 (anything else: the first).
    #[serde(default)]
    page: String,
}

pub async fn containers(
    State(state): State<AppState>,
    user: WebUser,
    Query(query): Query<ListQuery>,
) -> Result<ContainersPage, WebError> {
    require_read(&user, "*")?;
    let now = crate::db::now_secs();
    let rows = state.db.list_containers(true).await?;
    let total = rows.len();
    let search = query.q.trim().to_lowercase();
    let matching_rows: Vec<_> = rows
        .into_iter()
        .filter(|row| query.state.is_empty() || row.state == query.state)
        .filter(|row| {
            search.is_empty()
                || [&row.name, &row.id, &row.image]
                    .iter()
                    .any(|f| f.to_lowercase().contains(&search))
        })
        .collect();
    let matching = matching_rows.len();
    let pages = matching.div_ceil(PAGE_ROWS).max(1);
    let page = query.page.parse().unwrap_or(1).clamp(1, pages);
    let shown: Vec<_> = matching_rows
        .into_iter()
        .skip((page - 1) * PAGE_ROWS)
        .take(PAGE_ROWS)
        .collect();
    let link = |to: usize| {
        format!(
            "/containers?state={}&q={}&page={to}",
            crate::domain::percent_encode(&query.state),
            crate::domain::percent_encode(&query.q)
        )
    };
    let refresh_url = link(page);
    let (previous, next) = (
        if page > 1 {
            link(page - 1)
        } else {
            String::new()
        },
        if page < pages {
            link(page + 1)
        } else {
            String::new()
        },
    );
    let first = (page - 1) * PAGE_ROWS + usize::from(matching > 0);
    let mut containers = Vec::new();
    let views = state
        .engine
        .views(shown)
        .await
        .map_err(WebError::from_engine)?;
    let mut usage = usage_texts(&state, &views).await;
    for view in views {
        containers.push(ContainerRow {
            usage: usage.remove(&view.id).unwrap_or_default(),
            short_id: view.id[..12.min(view.id.len())].to_owned(),
            status: view.status_text(now),
            ports: view.port_texts().join(", "),
            created: super::pages::time_text(Some(view.created_at)),
            id: view.id,
            name: view.name,
            image: view.image,
            state: view.state,
        });
    }
    Ok(ContainersPage {
        rights: Rights::of(&user),
        user,
        last: first + containers.len().saturating_sub(1),
        first,
        previous,
        next,
        refresh_url,
        matching,
        containers,
        total,
        filter_state: query.state,
        search: query.q,
        states: vec!["running", "paused", "exited", "created"],
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "container.html")]
pub struct ContainerPage {
    pub user: WebUser,
    pub rights: Rights,
    pub logs: bool,
    pub exec: bool,
    /// Its processes while it runs: (pid, uid, command).
    pub processes: Vec<(i32, String, String)>,
    pub id: String,
    pub name: String,
    pub image: String,
    pub state: String,
    pub status: String,
    pub ports: String,
    pub networks: String,
    pub command: String,
    /// `inspect` as indented JSON.
    pub inspect: String,
}

/// The Content-Security-Policy of a container's page: the global one, but for inline styles,
/// which xterm.js sets for its terminal's colours and sizes (scripts stay file-only).
const CONTAINER_PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; \
     base-uri 'none'; object-src 'none'";

pub async fn container(
    State(state): State<AppState>,
    user: WebUser,
    Path(key): Path<String>,
) -> Result<impl IntoResponse, WebError> {
    require_read(&user, &key)?;
    let row = state
        .engine
        .get(&key)
        .await
        .map_err(WebError::from_engine)?;
    let view: ContainerView = state
        .engine
        .view(row)
        .await
        .map_err(WebError::from_engine)?;
    let may =
        |action| authorize(&user.principal, action, &Target::Container(view.id.clone())).is_ok();
    let (logs, exec) = (may(Action::ContainerLogs), may(Action::ContainerExec));
    let networks = view
        .network_settings
        .iter()
        .flat_map(|n| n.networks.iter())
        .map(|(name, ip)| format!("{name} ({ip})"))
        .collect::<Vec<_>>()
        .join(", ");
    let processes = if view.state == "running" {
        // A container that ended meanwhile simply has none.
        state
            .engine
            .top(&view.id)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let uid = p.uid.map_or_else(|| "-".to_owned(), |u| u.to_string());
                (p.pid, uid, p.command)
            })
            .collect()
    } else {
        Vec::new()
    };
    let page = ContainerPage {
        rights: Rights::of(&user),
        logs,
        exec,
        processes,
        inspect: serde_json::to_string_pretty(&view).unwrap_or_default(),
        status: view.status_text(crate::db::now_secs()),
        ports: view.port_texts().join(", "),
        networks,
        command: view
            .config
            .entrypoint
            .iter()
            .chain(view.config.cmd.iter())
            .cloned()
            .collect::<Vec<_>>()
            .join(" "),
        id: view.id,
        name: view.name,
        image: view.image,
        state: view.state,
        user,
    };
    Ok((
        [(
            axum::http::header::CONTENT_SECURITY_POLICY,
            CONTAINER_PAGE_CSP,
        )],
        page,
    ))
}

#[derive(Template, WebTemplate)]
#[template(path = "container_new.html")]
pub struct NewContainerPage {
    pub user: WebUser,
    /// The image to start from (`/containers/new?image=…`, as the Images page's "Run" sends).
    pub image: String,
    pub networks: Vec<String>,
    pub restart_policies: Vec<&'static str>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NewQuery {
    #[serde(default)]
    image: String,
}

pub async fn new_container(
    State(state): State<AppState>,
    user: WebUser,
    Query(query): Query<NewQuery>,
) -> Result<NewContainerPage, WebError> {
    authorize(
        &user.principal,
        Action::ContainerCreate,
        &Target::Container("*".into()),
    )
    .map_err(|d| WebError::Forbidden(d.to_string()))?;
    // The daemon's default first (what `docker run` without --network gets), then the others.
    let default = state.config.default_network.clone();
    let mut networks = vec![default.clone()];
    let others = ["bridge", "none", "host"]
        .into_iter()
        .map(String::from)
        .chain(state.db.list_networks().await?.into_iter().map(|n| n.name));
    for name in others {
        if !networks.contains(&name) {
            networks.push(name);
        }
    }
    Ok(NewContainerPage {
        user,
        image: query.image,
        networks,
        restart_policies: vec!["no", "always", "unless-stopped", "on-failure"],
    })
}

/// One row of the Volumes page.
pub struct VolumeRow {
    pub name: String,
    pub mountpoint: String,
    pub created: String,
    pub used_by: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "volumes.html")]
pub struct VolumesPage {
    pub user: WebUser,
    pub rights: Rights,
    pub volumes: Vec<VolumeRow>,
}

pub async fn volumes(
    State(state): State<AppState>,
    user: WebUser,
) -> Result<VolumesPage, WebError> {
    require_read(&user, "*")?;
    let volumes = state
        .engine
        .volumes()
        .await
        .map_err(WebError::from_engine)?
        .into_iter()
        .map(|v| VolumeRow {
            created: super::pages::time_text(Some(v.created_at)),
            used_by: v.used_by.join(", "),
            name: v.name,
            mountpoint: v.mountpoint,
        })
        .collect();
    Ok(VolumesPage {
        rights: Rights::of(&user),
        user,
        volumes,
    })
}

/// One row of the Networks page.
pub struct NetworkRow {
    pub name: String,
    pub subnet: String,
    pub gateway: String,
    pub bridge: String,
    /// `name (address)` of each container on it.
    pub containers: String,
    /// No container is on it.
    pub removable: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "networks.html")]
pub struct NetworksPage {
    pub user: WebUser,
    pub rights: Rights,
    pub networks: Vec<NetworkRow>,
}

pub async fn networks(
    State(state): State<AppState>,
    user: WebUser,
) -> Result<NetworksPage, WebError> {
    require_read(&user, "*")?;
    let networks = state
        .engine
        .network_views()
        .await
        .map_err(WebError::from_engine)?
        .into_iter()
        .map(|n| NetworkRow {
            removable: n.containers.is_empty(),
            containers: n
                .containers
                .iter()
                .map(|c| format!("{} ({})", c.name, c.ip))
                .collect::<Vec<_>>()
                .join(", "),
            name: n.name,
            subnet: n.subnet,
            gateway: n.gateway,
            bridge: n.bridge,
        })
        .collect();
    Ok(NetworksPage {
        rights: Rights::of(&user),
        user,
        networks,
    })
}
