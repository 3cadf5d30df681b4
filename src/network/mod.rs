//! Container networks as docker users know them: the default `bridge` network (bridge
//! `wharf0`), user-defined bridge networks, and the endpoints containers hold on them.
//!
//! This module owns the bridges, the veth pairs, the per-container network namespaces (kept in
//! files under the data root, joined by the runtime by path), the addresses (IPAM in SQLite:
//! an address is held by one endpoint at a time) and wharf's nftables table (outbound NAT,
//! isolation between networks). The engine asks it for an endpoint when a container starts and
//! gives it back when the container stops.

pub mod files;
pub mod ipam;
pub mod netlink;
pub mod nft;
pub mod ports;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::db::networks::{EndpointRow, NetworkRow, PortRow};
use crate::db::{Db, DbError};
use ipam::Subnet;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("no such network: {0}")]
    NoNetwork(String),
    #[error("{0}")]
    Invalid(String),
    #[error("network {name} is in use by container(s) {users}: remove them first")]
    InUse { name: String, users: String },
    #[error("network {network} has no free address left")]
    Exhausted { network: String },
    #[error("address {ip} is already in use on network {network}")]
    Taken { ip: Ipv4Addr, network: String },
    #[error("netlink: {what}: {reason}")]
    Netlink { what: String, reason: String },
    #[error("network namespace {}: {reason}", path.display())]
    Namespace { path: PathBuf, reason: String },
    #[error("nftables: {reason}")]
    Firewall { reason: String },
    #[error(transparent)]
    Database(#[from] DbError),
}

/// The network containers join unless told otherwise, and its bridge.
pub const DEFAULT_NETWORK: &str = "bridge";
pub const DEFAULT_BRIDGE: &str = "wharf0";
/// The default network's subnet unless configured.
pub const DEFAULT_SUBNET: &str = "172.30.0.0/16";
/// Where user networks get their /24 subnets from when none is given.
const USER_POOL: &str = "10.90.0.0/16";

/// Names a user network may not take: network modes.
const RESERVED: [&str; 4] = ["bridge", "none", "host", "default"];

/// A container's place on a network, once plugged in.
#[derive(Debug, Clone)]
pub struct Attached {
    pub network: NetworkRow,
    pub ip: Ipv4Addr,
    /// The namespace the container joins.
    pub netns: PathBuf,
}

/// The networks of one daemon.
#[derive(Debug)]
pub struct Networks {
    db: Db,
    netns_dir: PathBuf,
    default_subnet: Subnet,
    /// Network changes one at a time: address choice, bridges and the ruleset stay consistent.
    lock: tokio::sync::Mutex<()>,
    /// The proxies of published ports, by container.
    proxies: std::sync::Mutex<std::collections::HashMap<String, Vec<tokio::task::JoinHandle<()>>>>,
    /// Host ends of the veths of stopped containers being deleted, by name: deleting a link
    /// waits for the kernel to drop its last references (~30 ms here), which a stop does not
    /// wait for. Whatever needs a name again, or the bridge gone, waits for them.
    unplugging: std::sync::Mutex<std::collections::HashMap<String, tokio::task::JoinHandle<()>>>,
}

fn new_id() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS gives random bytes");
    hex::encode(bytes)
}

fn check_name(name: &str) -> Result<(), NetworkError> {
    let ok = name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(NetworkError::Invalid(format!(
            "network name {name:?} is not valid: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64"
        )));
    }
    if RESERVED.contains(&name) {
        return Err(NetworkError::Invalid(format!(
            "network name {name:?} is reserved for a network mode"
        )));
    }
    Ok(())
}

/// Lets the kernel forward between the bridges and the outside (in the daemon's namespace).
fn enable_forwarding() -> Result<(), NetworkError> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| NetworkError::Netlink {
        what: "turn IPv4 forwarding on".into(),
        reason: e.to_string(),
    })
}

impl Networks {
    pub fn new(db: Db, netns_dir: PathBuf, default_subnet: Subnet) -> Networks {
        Networks {
            db,
            netns_dir,
            default_subnet,
            lock: tokio::sync::Mutex::new(()),
            proxies: std::sync::Mutex::new(std::collections::HashMap::new()),
            unplugging: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Waits for the deletion of host veth `name` (see `unplugging`), if one is under way.
    async fn unplugged(&self, name: &str) {
        let task = self
            .unplugging
            .lock()
            .expect("the unplugging lock")
            .remove(name);
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Waits for every veth deletion under way.
    async fn all_unplugged(&self) {
        let tasks: Vec<_> = self
            .unplugging
            .lock()
            .expect("the unplugging lock")
            .drain()
            .map(|(_, task)| task)
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Where container `id`'s network namespace is kept.
    pub fn netns_path(&self, container_id: &str) -> PathBuf {
        self.netns_dir.join(container_id)
    }

    async fn apply_rules(&self) -> Result<(), NetworkError> {
        let networks = self.db.list_networks().await?;
        let published = self.db.published_ports().await?;
        tokio::task::spawn_blocking(move || {
            let rules: Vec<nft::Rules> = networks
                .iter()
                .map(|n| nft::Rules {
                    bridge: &n.bridge,
                    subnet: &n.subnet,
                })
                .collect();
            let dnat: Vec<nft::Dnat> = published
                .iter()
                .map(|(p, ip)| nft::Dnat {
                    host_ip: &p.host_ip,
                    host_port: p.host_port as u16,
                    protocol: &p.protocol,
                    to_ip: ip,
                    to_port: p.container_port as u16,
                })
                .collect();
            nft::apply(&rules, &dnat)
        })
        .await
        .map_err(|e| NetworkError::Firewall {
            reason: e.to_string(),
        })?
    }

    /// Records and makes a network: its bridge up with the gateway address, its rules in.
    async fn make(&self, row: NetworkRow) -> Result<NetworkRow, NetworkError> {
        let subnet = Subnet::parse(&row.subnet).map_err(NetworkError::Invalid)?;
        self.db.insert_network(&row).await?;
        let made = async {
            enable_forwarding()?;
            netlink::ensure_bridge(&row.bridge, subnet.gateway(), subnet.prefix).await?;
            self.apply_rules().await
        }
        .await;
        if let Err(e) = made {
            let _ = netlink::delete_link(&row.bridge).await;
            let _ = self.db.delete_network(&row.id).await;
            let _ = self.apply_rules().await;
            return Err(e);
        }
        Ok(row)
    }

    /// Makes user network `name`, on `subnet` or the first free /24 of 10.90.0.0/16.
    pub async fn create(
        &self,
        name: &str,
        subnet: Option<&str>,
    ) -> Result<NetworkRow, NetworkError> {
        check_name(name)?;
        let _one = self.lock.lock().await;
        let used: Vec<Subnet> = self
            .db
            .list_networks()
            .await?
            .iter()
            .filter_map(|n| Subnet::parse(&n.subnet).ok())
            .chain(std::iter::once(self.default_subnet))
            .collect();
        let subnet = match subnet {
            Some(text) => {
                let s = Subnet::parse(text).map_err(NetworkError::Invalid)?;
                if let Some(other) = used.iter().find(|u| u.overlaps(&s)) {
                    return Err(NetworkError::Invalid(format!(
                        "subnet {s} overlaps {other}, which another network uses"
                    )));
                }
                s
            }
            None => {
                let pool = Subnet::parse(USER_POOL).expect("a valid pool");
                ipam::free_subnet(&pool, &used).ok_or_else(|| {
                    NetworkError::Invalid(format!(
                        "no free /24 is left in {USER_POOL}: give --subnet"
                    ))
                })?
            }
        };
        let id = new_id();
        let bridge = format!("wh-{}", &id[..12]);
        self.make(NetworkRow {
            id,
            name: name.to_owned(),
            driver: "bridge".into(),
            subnet: subnet.to_string(),
            gateway: subnet.gateway().to_string(),
            bridge,
            is_default: false,
            created_at: 0,
        })
        .await
    }

    /// The default network, made on first use.
    async fn default_network(&self) -> Result<NetworkRow, NetworkError> {
        if let Some(n) = self.db.find_network(DEFAULT_NETWORK).await? {
            return Ok(n);
        }
        let subnet = self.default_subnet;
        self.make(NetworkRow {
            id: new_id(),
            name: DEFAULT_NETWORK.into(),
            driver: "bridge".into(),
            subnet: subnet.to_string(),
            gateway: subnet.gateway().to_string(),
            bridge: DEFAULT_BRIDGE.into(),
            is_default: true,
            created_at: 0,
        })
        .await
    }

    pub async fn find(&self, key: &str) -> Result<NetworkRow, NetworkError> {
        self.db
            .find_network(key)
            .await?
            .ok_or_else(|| NetworkError::NoNetwork(key.to_owned()))
    }

    /// Every network with its endpoints.
    pub async fn list(&self) -> Result<Vec<(NetworkRow, Vec<EndpointRow>)>, NetworkError> {
        let mut out = Vec::new();
        for n in self.db.list_networks().await? {
            let endpoints = self.db.endpoints_of_network(&n.id).await?;
            out.push((n, endpoints));
        }
        Ok(out)
    }

    /// Removes an unused network: its bridge and its rules (the table with the last one).
    /// `users` names who is on it, for the refusal; the check itself is made here, under the
    /// lock that attaching takes too.
    pub async fn remove(&self, key: &str, users: &[String]) -> Result<(), NetworkError> {
        let _one = self.lock.lock().await;
        self.all_unplugged().await;
        let n = self.find(key).await?;
        let endpoints = self.db.endpoints_of_network(&n.id).await?;
        if !endpoints.is_empty() || !users.is_empty() {
            let users = if users.is_empty() {
                endpoints
                    .iter()
                    .map(|e| e.container_id[..12.min(e.container_id.len())].to_owned())
                    .collect::<Vec<_>>()
            } else {
                users.to_vec()
            };
            return Err(NetworkError::InUse {
                name: n.name,
                users: users.join(", "),
            });
        }
        // The record first: a failure after it leaves no network that points at nothing.
        self.db.delete_network(&n.id).await?;
        netlink::delete_link(&n.bridge).await?;
        self.apply_rules().await
    }

    /// Plugs container `container_id` into `network` (the default one for `bridge`), at `ip`
    /// or the lowest free address, known there by `names`. The first network makes the
    /// container's namespace and its `eth0` (with the default route); a later one, while it
    /// runs (`network connect`), adds `eth1`, `eth2`…
    pub async fn attach(
        &self,
        container_id: &str,
        network: &str,
        ip: Option<Ipv4Addr>,
        names: &[String],
    ) -> Result<Attached, NetworkError> {
        let _one = self.lock.lock().await;
        let existing = self.db.endpoints_of_container(container_id).await?;
        let first = existing.is_empty();
        let net = if network == DEFAULT_NETWORK {
            self.default_network().await?
        } else {
            self.find(network).await?
        };
        if existing.iter().any(|e| e.network_id == net.id) {
            return Err(NetworkError::Invalid(format!(
                "the container is already on network {}",
                net.name
            )));
        }
        let slot = (0..10)
            .find(|n| {
                !existing
                    .iter()
                    .any(|e| e.host_veth.ends_with(&n.to_string()) && e.host_veth.len() == 15)
            })
            .ok_or_else(|| NetworkError::Invalid("a container is on at most 10 networks".into()))?;
        if !netlink::link_exists(&net.bridge).await? {
            // Gone with a reboot or by hand: made again.
            let subnet = Subnet::parse(&net.subnet).map_err(NetworkError::Invalid)?;
            enable_forwarding()?;
            netlink::ensure_bridge(&net.bridge, subnet.gateway(), subnet.prefix).await?;
            self.apply_rules().await?;
        }
        let subnet = Subnet::parse(&net.subnet).map_err(NetworkError::Invalid)?;
        let taken: HashSet<Ipv4Addr> = self
            .db
            .endpoints_of_network(&net.id)
            .await?
            .iter()
            .filter_map(|e| e.ip.parse().ok())
            .collect();
        let ip = match ip {
            Some(_) if net.is_default => {
                return Err(NetworkError::Invalid(
                    "a static --ip is for user-defined networks only".into(),
                ));
            }
            Some(ip) if !subnet.assignable(ip) => {
                return Err(NetworkError::Invalid(format!(
                    "address {ip} is not one a container can have on network {} ({subnet})",
                    net.name
                )));
            }
            Some(ip) if taken.contains(&ip) => {
                return Err(NetworkError::Taken {
                    ip,
                    network: net.name,
                });
            }
            Some(ip) => ip,
            None => subnet.pick(&taken).ok_or_else(|| NetworkError::Exhausted {
                network: net.name.clone(),
            })?,
        };
        let host_veth = format!("wv{}{slot}", &container_id[..12.min(container_id.len())]);
        let recorded = self
            .db
            .insert_endpoint(&EndpointRow {
                network_id: net.id.clone(),
                container_id: container_id.to_owned(),
                ip: ip.to_string(),
                host_veth: host_veth.clone(),
                aliases: serde_json::to_string(names).expect("JSON"),
            })
            .await?;
        if !recorded {
            return Err(NetworkError::Taken {
                ip,
                network: net.name,
            });
        }
        let netns = self.netns_path(container_id);
        let began = std::time::Instant::now();
        let plugged = async {
            self.unplugged(&host_veth).await;
            let _ = netlink::delete_link(&host_veth).await;
            if first {
                // A stale namespace (a crash between start and stop) goes first.
                netlink::remove_netns(&netns);
                let host_ns = std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| {
                    NetworkError::Namespace {
                        path: "/proc/thread-self/ns/net".into(),
                        reason: e.to_string(),
                    }
                })?;
                let link = netlink::FirstLink {
                    host_veth: host_veth.clone(),
                    ifname: format!("eth{slot}"),
                    ip,
                    prefix: subnet.prefix,
                    gateway: subnet.gateway(),
                    host_ns,
                };
                let path = netns.clone();
                tokio::task::spawn_blocking(move || netlink::new_netns(&path, Some(link)))
                    .await
                    .map_err(|e| NetworkError::Namespace {
                        path: netns.clone(),
                        reason: e.to_string(),
                    })??;
                netlink::enslave(&host_veth, &net.bridge).await
            } else {
                netlink::plug(
                    &netns,
                    &net.bridge,
                    &host_veth,
                    &format!("eth{slot}"),
                    ip,
                    subnet.prefix,
                    None,
                )
                .await
            }
        }
        .await;
        if let Err(e) = plugged {
            if first {
                netlink::remove_netns(&netns);
            }
            let _ = self.db.delete_endpoint(&net.id, container_id).await;
            return Err(e);
        }
        tracing::debug!(container = container_id, network = %net.name, %ip, took = ?began.elapsed(), "plugged in");
        Ok(Attached {
            network: net,
            ip,
            netns,
        })
    }

    /// Publishes `specs` of container `container_id` (at `ip`): each host port taken, served
    /// by a proxy for loopback, and DNAT'ed for the host's other addresses. All or none.
    pub async fn publish(
        &self,
        container_id: &str,
        ip: Ipv4Addr,
        specs: &[ports::PortSpec],
    ) -> Result<Vec<PortRow>, NetworkError> {
        let _one = self.lock.lock().await;
        let mut rows = Vec::new();
        let mut tasks = Vec::new();
        let result: Result<(), NetworkError> = async {
            for spec in specs {
                let held = ports::hold(spec)?;
                let row = PortRow {
                    container_id: container_id.to_owned(),
                    host_ip: spec.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string(),
                    host_port: i64::from(held.port()),
                    container_port: i64::from(spec.container_port),
                    protocol: spec.protocol().to_owned(),
                };
                if !self.db.insert_port(&row).await? {
                    return Err(NetworkError::Invalid(format!(
                        "port {}/{} is already published by another container",
                        row.host_port, row.protocol
                    )));
                }
                tasks.push(ports::serve(
                    held,
                    std::net::SocketAddr::from((ip, spec.container_port)),
                ));
                rows.push(row);
            }
            self.apply_rules().await
        }
        .await;
        if let Err(e) = result {
            for t in tasks {
                t.abort();
                let _ = t.await;
            }
            let _ = self.db.delete_ports_of_container(container_id).await;
            let _ = self.apply_rules().await;
            return Err(e);
        }
        self.proxies
            .lock()
            .expect("the proxies' lock")
            .insert(container_id.to_owned(), tasks);
        Ok(rows)
    }

    /// After a daemon restart: takes the published ports of running containers again.
    pub async fn restore(&self) -> Result<(), NetworkError> {
        let _one = self.lock.lock().await;
        let published = self.db.published_ports().await?;
        for (row, ip) in published {
            let spec = ports::PortSpec {
                host_ip: row
                    .host_ip
                    .parse()
                    .ok()
                    .filter(|i: &Ipv4Addr| !i.is_unspecified()),
                host_port: Some(row.host_port as u16),
                container_port: row.container_port as u16,
                udp: row.protocol == "udp",
            };
            let Ok(to) = ip.parse::<Ipv4Addr>() else {
                continue;
            };
            match ports::hold(&spec) {
                Ok(held) => {
                    let task =
                        ports::serve(held, std::net::SocketAddr::from((to, spec.container_port)));
                    self.proxies
                        .lock()
                        .expect("the proxies' lock")
                        .entry(row.container_id.clone())
                        .or_default()
                        .push(task);
                }
                Err(e) => {
                    tracing::warn!(container = %row.container_id, error = %e, "could not take a published port again")
                }
            }
        }
        if !self.db.list_networks().await?.is_empty() {
            self.apply_rules().await?;
        }
        Ok(())
    }

    /// Unplugs container `container_id` from every network and gives its addresses back.
    pub async fn detach(&self, container_id: &str) -> Result<Vec<EndpointRow>, NetworkError> {
        let _one = self.lock.lock().await;
        let proxies = self
            .proxies
            .lock()
            .expect("the proxies' lock")
            .remove(container_id);
        // Aborted and awaited: the host ports are free again when this returns (a restart
        // takes them at once).
        for task in proxies.into_iter().flatten() {
            task.abort();
            let _ = task.await;
        }
        // Every step is taken even when one fails (a stop must give everything back, or the
        // next start finds the container still holding its address); the first error is told.
        let mut first_error = None;
        let mut note = |r: Result<(), NetworkError>| {
            if let Err(e) = r
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        };
        let had_ports = !self.db.ports_of_container(container_id).await?.is_empty();
        note(
            self.db
                .delete_ports_of_container(container_id)
                .await
                .map_err(Into::into),
        );
        if had_ports {
            note(self.apply_rules().await);
        }
        let endpoints = self.db.endpoints_of_container(container_id).await?;
        // The veths go in the background (a later attach of the same name, or a network's
        // removal, waits for them); the namespace's removal alone would take them too, unless
        // a `container:` sharer keeps it.
        for e in &endpoints {
            let name = e.host_veth.clone();
            let task = tokio::spawn(async move {
                // The namespace's end may take the pair with it first: gone is as good.
                if let Err(e) = netlink::delete_link(&name).await
                    && netlink::link_exists(&name).await.unwrap_or(true)
                {
                    tracing::warn!(link = %name, error = %e, "could not remove a stopped container's veth");
                }
            });
            let mut unplugging = self.unplugging.lock().expect("the unplugging lock");
            unplugging.retain(|_, task| !task.is_finished());
            unplugging.insert(e.host_veth.clone(), task);
        }
        netlink::remove_netns(&self.netns_path(container_id));
        note(
            self.db
                .delete_endpoints_of_container(container_id)
                .await
                .map_err(Into::into),
        );
        match first_error {
            Some(e) => Err(e),
            None => Ok(endpoints),
        }
    }

    /// Unplugs a running container from one network (`network disconnect`).
    pub async fn detach_one(
        &self,
        container_id: &str,
        network: &str,
    ) -> Result<EndpointRow, NetworkError> {
        let _one = self.lock.lock().await;
        let net = self.find(network).await?;
        let endpoint = self
            .db
            .endpoints_of_container(container_id)
            .await?
            .into_iter()
            .find(|e| e.network_id == net.id)
            .ok_or_else(|| {
                NetworkError::Invalid(format!("the container is not on network {}", net.name))
            })?;
        netlink::delete_link(&endpoint.host_veth).await?;
        self.db.delete_endpoint(&net.id, container_id).await?;
        Ok(endpoint)
    }

    /// The endpoints of the other containers on the user networks `container_id` is on: who
    /// its `/etc/hosts` names.
    pub async fn peers(&self, container_id: &str) -> Result<Vec<EndpointRow>, NetworkError> {
        let mut out = Vec::new();
        for own in self.db.endpoints_of_container(container_id).await? {
            let Some(net) = self.db.find_network(&own.network_id).await? else {
                continue;
            };
            if net.is_default {
                continue;
            }
            for e in self.db.endpoints_of_network(&net.id).await? {
                if e.container_id != container_id {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// The containers on the user networks of these endpoints (whose hosts files list them).
    pub async fn neighbours(&self, endpoints: &[EndpointRow]) -> Result<Vec<String>, NetworkError> {
        let mut out = Vec::new();
        for own in endpoints {
            let Some(net) = self.db.find_network(&own.network_id).await? else {
                continue;
            };
            if net.is_default {
                continue;
            }
            for e in self.db.endpoints_of_network(&net.id).await? {
                if e.container_id != own.container_id && !out.contains(&e.container_id) {
                    out.push(e.container_id);
                }
            }
        }
        Ok(out)
    }
}
