//! Links, addresses and routes through netlink (`rtnetlink`), and network namespaces kept in
//! files (a bind mount of `/proc/thread-self/ns/net`, as `ip netns` keeps them).
//!
//! Work inside a container's namespace runs on a thread of its own that enters the namespace
//! (`setns` moves only the calling thread) with a netlink socket opened there.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::NetworkError;

fn failed(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let what = what.into();
    move |e| NetworkError::Netlink {
        what,
        reason: e.to_string(),
    }
}

/// A netlink handle in the calling thread's network namespace.
fn connect() -> Result<Handle, NetworkError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| NetworkError::Netlink {
            what: "open a netlink socket".into(),
            reason: e.to_string(),
        })?;
    tokio::spawn(connection);
    Ok(handle)
}

async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        // No such device.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(failed(format!("look up {name}"))(e)),
    }
}

/// The index of link `name`, which must be there (`what` says what was being done).
async fn require_index(handle: &Handle, name: &str, what: String) -> Result<u32, NetworkError> {
    index_of(handle, name)
        .await?
        .ok_or_else(|| NetworkError::Netlink {
            what,
            reason: format!("{name} is not there"),
        })
}

/// Makes bridge `name` with `gateway/prefix` and brings it up; an existing one is kept.
pub async fn ensure_bridge(name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), NetworkError> {
    let handle = connect()?;
    let index = match index_of(&handle, name).await? {
        Some(index) => index,
        None => {
            handle
                .link()
                // A hardware address of its own: one the bridge took from its ports would
                // change as containers come and go, and every neighbour entry on both sides
                // with it.
                .add(
                    LinkBridge::new(name)
                        .address(mac_of(gateway).to_vec())
                        .build(),
                )
                .execute()
                .await
                .map_err(failed(format!("make bridge {name}")))?;
            let index = require_index(&handle, name, format!("make bridge {name}")).await?;
            handle
                .address()
                .add(index, gateway.into(), prefix)
                .execute()
                .await
                .map_err(failed(format!(
                    "give {name} the address {gateway}/{prefix}"
                )))?;
            index
        }
    };
    // (Set on a bridge made before bridges had an address of their own too.)
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .address(mac_of(gateway).to_vec())
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(failed(format!("bring {name} up")))
}

/// Removes link `name` (with a veth, its peer goes too); a missing one is fine.
pub async fn delete_link(name: &str) -> Result<(), NetworkError> {
    let handle = connect()?;
    if let Some(index) = index_of(&handle, name).await? {
        handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(failed(format!("remove {name}")))?;
    }
    Ok(())
}

/// Whether link `name` exists in this namespace.
pub async fn link_exists(name: &str) -> Result<bool, NetworkError> {
    Ok(index_of(&connect()?, name).await?.is_some())
}

/// Runs `work` on a thread inside the namespace kept at `netns`, with its own runtime.
fn in_netns<T: Send + 'static>(
    netns: &Path,
    work: impl FnOnce() -> Result<T, NetworkError> + Send + 'static,
) -> Result<T, NetworkError> {
    let file = File::open(netns).map_err(|e| NetworkError::Namespace {
        path: netns.to_owned(),
        reason: e.to_string(),
    })?;
    let path = netns.to_owned();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            NetworkError::Namespace {
                path,
                reason: format!("enter: {}", e.desc()),
            }
        })?;
        work()
    })
    .join()
    .unwrap_or_else(|_| {
        Err(NetworkError::Netlink {
            what: "work in a container's namespace".into(),
            reason: "the thread failed".into(),
        })
    })
}

/// The container's end of its first network, made from inside its new namespace.
pub struct FirstLink {
    /// The host's end, made in the daemon's namespace (`host_ns`), not yet on a bridge.
    pub host_veth: String,
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub host_ns: File,
}

/// A fresh network namespace kept at `path` (`lo` up), and with `link` its first interface:
/// one thread enters the namespace, makes the veth pair there with the host's end in the
/// daemon's namespace (nothing is moved afterwards, which costs the kernel a device's
/// unregistering and registering again), and sets address, link and route.
pub fn new_netns(path: &Path, link: Option<FirstLink>) -> Result<(), NetworkError> {
    let fail = |reason: String| NetworkError::Namespace {
        path: path.to_owned(),
        reason,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    }
    File::create(path).map_err(|e| fail(e.to_string()))?;
    let target = path.to_owned();
    let made = std::thread::spawn(move || -> Result<(), String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare: {}", e.desc()))?;
        let tid = nix::unistd::gettid();
        let own = PathBuf::from(format!("/proc/self/task/{tid}/ns/net"));
        nix::mount::mount(
            Some(&own),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("keep it at the path: {}", e.desc()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime
            .block_on(async {
                let handle = connect()?;
                let lo = index_of(&handle, "lo").await?.unwrap_or(1);
                handle
                    .link()
                    .set(LinkUnspec::new_with_index(lo).up().build())
                    .execute()
                    .await
                    .map_err(failed("bring lo up"))?;
                let Some(link) = link else {
                    return Ok(());
                };
                use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
                use std::os::fd::AsRawFd;
                let peer = rtnetlink::LinkMessageBuilder::<LinkUnspec>::new()
                    .name(link.host_veth.clone())
                    .setns_by_fd(link.host_ns.as_raw_fd())
                    .build();
                let pair =
                    rtnetlink::LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                        .name(link.ifname.clone())
                        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                        .build();
                handle
                    .link()
                    .add(pair)
                    .execute()
                    .await
                    .map_err(failed(format!("make the veth pair {}", link.host_veth)))?;
                configure(
                    &handle,
                    &link.ifname,
                    link.ip,
                    link.prefix,
                    Some(link.gateway),
                )
                .await
            })
            .map_err(|e| e.to_string())
    })
    .join()
    .unwrap_or_else(|_| Err("the thread failed".into()));
    if let Err(reason) = made {
        remove_netns(path);
        return Err(fail(reason));
    }
    Ok(())
}

/// Lets the namespace kept at `path` go (it ends with its last user) and removes the file.
pub fn remove_netns(path: &Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// The hardware address of the interface holding `ip`: locally administered and made from
/// the address, as Docker does, so an address handed out again comes back with the same
/// one and the neighbour entries the bridge's host side still keeps for it stay right (with
/// random ones, a reused address is unreachable until the stale entry times out).
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x57, a, b, c, d]
}

/// Gives interface `ifname` of this namespace `ip/prefix` (and the hardware address
/// `mac_of(ip)`), brings it up, and routes through `gateway` when given.
async fn configure(
    handle: &Handle,
    ifname: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
) -> Result<(), NetworkError> {
    let index = require_index(handle, ifname, format!("set up {ifname}")).await?;
    handle
        .address()
        .add(index, ip.into(), prefix)
        .execute()
        .await
        .map_err(failed(format!("give {ifname} {ip}/{prefix}")))?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .address(mac_of(ip).to_vec())
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(failed(format!("bring {ifname} up")))?;
    let Some(gateway) = gateway else {
        return Ok(());
    };
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .build();
    handle
        .route()
        .add(route)
        .execute()
        .await
        .map_err(failed(format!("route through {gateway}")))
}

/// Puts the host's end of a container's veth pair on `bridge` and up.
pub async fn enslave(host_veth: &str, bridge: &str) -> Result<(), NetworkError> {
    let handle = connect()?;
    let bridge_index = require_index(&handle, bridge, format!("plug into {bridge}")).await?;
    let host_index = require_index(
        &handle,
        host_veth,
        format!("plug {host_veth} into {bridge}"),
    )
    .await?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(host_index)
                .controller(bridge_index)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(failed(format!("put {host_veth} on {bridge}")))
}

/// Plugs the namespace at `netns` into `bridge`: a veth pair whose host end (`host_veth`,
/// `wv…`) joins the bridge and whose other end becomes the namespace's `ifname` with
/// `ip/prefix`, and a default route through `gateway` when given (the first network's).
pub async fn plug(
    netns: &Path,
    bridge: &str,
    host_veth: &str,
    ifname: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
) -> Result<(), NetworkError> {
    let handle = connect()?;
    // Made in this namespace first, then moved: a name of its own here.
    let peer = format!("wp{}", host_veth.get(2..).unwrap_or(host_veth));
    let ifname = ifname.to_owned();
    handle
        .link()
        .add(LinkVeth::new(host_veth, &peer).build())
        .execute()
        .await
        .map_err(failed(format!("make the veth pair {host_veth}")))?;
    let result = async {
        let peer_index = index_of(&handle, &peer).await?.unwrap_or(0);
        enslave(host_veth, bridge).await?;
        let ns = File::open(netns).map_err(|e| NetworkError::Namespace {
            path: netns.to_owned(),
            reason: e.to_string(),
        })?;
        use std::os::fd::AsRawFd;
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(peer_index)
                    .setns_by_fd(ns.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(failed("move the container's end into its namespace"))?;
        drop(ns);
        let peer_name = peer.clone();
        in_netns(netns, move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| NetworkError::Netlink {
                    what: "a runtime in the container's namespace".into(),
                    reason: e.to_string(),
                })?;
            runtime.block_on(async move {
                let handle = connect()?;
                let index = require_index(&handle, &peer_name, format!("set up {ifname}")).await?;
                handle
                    .link()
                    .set(LinkUnspec::new_with_index(index).name(&ifname).build())
                    .execute()
                    .await
                    .map_err(failed(format!("name the container's interface {ifname}")))?;
                configure(&handle, &ifname, ip, prefix, gateway).await
            })
        })
    }
    .await;
    if result.is_err() {
        let _ = delete_link(host_veth).await;
    }
    result
}
