//! Published ports: docker's `-p [ip:][host:]container[/proto]` read, the host port held by a
//! socket of the daemon (so no other service takes it, and a taken one is refused at once),
//! and the daemon's proxy for what DNAT cannot carry: connections to the loopback addresses.

use std::net::{Ipv4Addr, SocketAddr};

use super::NetworkError;

/// One `-p`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec {
    /// `None`: every address (0.0.0.0).
    pub host_ip: Option<Ipv4Addr>,
    /// `None`: a free port the kernel picks.
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub udp: bool,
}

impl PortSpec {
    pub fn protocol(&self) -> &'static str {
        if self.udp { "udp" } else { "tcp" }
    }
}

/// Reads `80`, `8080:80`, `127.0.0.1:8080:80`, `127.0.0.1::80`, any of them with `/tcp|/udp`.
pub fn parse(text: &str) -> Result<PortSpec, String> {
    let bad = |why: &str| format!("port {text:?}: {why} (give [ip:][hostport:]port[/tcp|udp])");
    let (rest, udp) = match text.rsplit_once('/') {
        Some((rest, "tcp")) => (rest, false),
        Some((rest, "udp")) => (rest, true),
        Some(_) => return Err(bad("the protocol is tcp or udp")),
        None => (text, false),
    };
    let port = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad(&format!("{p:?} is not a port")))
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, host_port, container) = match parts.as_slice() {
        [c] => (None, None, *c),
        [h, c] => (None, Some(*h), *c),
        [ip, h, c] => (Some(*ip), Some(*h).filter(|h| !h.is_empty()), *c),
        _ => return Err(bad("too many parts")),
    };
    let host_ip = host_ip
        .map(|ip| {
            ip.parse::<Ipv4Addr>()
                .map_err(|_| bad("not an IPv4 address"))
        })
        .transpose()?
        .filter(|ip| !ip.is_unspecified());
    Ok(PortSpec {
        host_ip,
        host_port: host_port.map(port).transpose()?,
        container_port: port(container)?,
        udp,
    })
}

/// What holds a published host port: a listening socket (TCP, which the proxy serves) or a
/// bound one (UDP, held so nobody else takes the port).
pub enum Held {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl Held {
    pub fn port(&self) -> u16 {
        let addr = match self {
            Held::Tcp(l) => l.local_addr(),
            Held::Udp(s) => s.local_addr(),
        };
        addr.map_or(0, |a| a.port())
    }
}

/// Takes the host port of `spec` (a free one when it names none).
pub fn hold(spec: &PortSpec) -> Result<Held, NetworkError> {
    let ip = spec.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let addr = SocketAddr::from((ip, spec.host_port.unwrap_or(0)));
    let taken = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            NetworkError::Invalid(format!(
                "port {}/{} is already in use on {ip}: choose another host port",
                spec.host_port.unwrap_or(0),
                spec.protocol()
            ))
        } else {
            NetworkError::Invalid(format!("cannot take port {addr}/{}: {e}", spec.protocol()))
        }
    };
    if spec.udp {
        std::net::UdpSocket::bind(addr)
            .map(Held::Udp)
            .map_err(taken)
    } else {
        let listener = std::net::TcpListener::bind(addr).map_err(taken)?;
        listener
            .set_nonblocking(true)
            .map_err(|e| NetworkError::Invalid(e.to_string()))?;
        Ok(Held::Tcp(listener))
    }
}

/// Serves a held port until aborted: what DNAT did not take (what came to a loopback
/// address) is carried to `to`: each TCP connection, and for UDP each client's datagrams
/// and the answers to them.
pub fn serve(held: Held, to: SocketAddr) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let listener = match held {
            Held::Tcp(l) => match tokio::net::TcpListener::from_std(l) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "could not serve a published port");
                    return;
                }
            },
            Held::Udp(socket) => return serve_udp(socket, to).await,
        };
        // The connections live in this task: aborting it (the container stopped) ends them.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((mut client, _)) => {
                        connections.spawn(async move {
                            if let Ok(mut upstream) = tokio::net::TcpStream::connect(to).await {
                                let _ = tokio::io::copy_bidirectional_with_sizes(
                                    &mut client,
                                    &mut upstream,
                                    COPY_BUFFER,
                                    COPY_BUFFER,
                                )
                                .await;
                            }
                        });
                    }
                    // Out of descriptors, say: wait instead of spinning.
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

/// A UDP client (its address and port) without an answer for this long is forgotten, and
/// its upstream socket closed (docker's proxy waits as long).
const UDP_FLOW_IDLE: std::time::Duration = std::time::Duration::from_secs(90);
/// At most this many UDP clients at a time; datagrams of more are dropped until one is
/// forgotten.
const UDP_FLOWS_MAX: usize = 256;
/// The largest UDP payload over IPv4.
const UDP_DATAGRAM_MAX: usize = 65_507;

/// The UDP side of [`serve`]: each client gets an upstream socket of its own, connected to
/// `to`, so the answers find their way back to it. Only this task holds the published socket
/// (the flows hand their answers to it), so the port is free once the task has ended.
async fn serve_udp(socket: std::net::UdpSocket, to: SocketAddr) {
    use std::sync::Arc;
    let socket = match socket
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UdpSocket::from_std(socket))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "could not serve a published UDP port");
            return;
        }
    };
    let mut flows: std::collections::HashMap<SocketAddr, Arc<tokio::net::UdpSocket>> =
        std::collections::HashMap::new();
    // Each flow's answers are read by a task of this one (aborting it ends them all) and
    // sent from here.
    let mut relays = tokio::task::JoinSet::new();
    let (answers_tx, mut answers) = tokio::sync::mpsc::channel::<(Vec<u8>, SocketAddr)>(64);
    let mut buf = vec![0u8; UDP_DATAGRAM_MAX];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, client)) = received else {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                let upstream = match flows.get(&client) {
                    Some(u) => u.clone(),
                    None if flows.len() >= UDP_FLOWS_MAX => continue,
                    None => {
                        let Ok(u) = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await
                        else {
                            continue;
                        };
                        if u.connect(to).await.is_err() {
                            continue;
                        }
                        let u = Arc::new(u);
                        flows.insert(client, u.clone());
                        relays.spawn(relay_answers(u.clone(), client, answers_tx.clone()));
                        u
                    }
                };
                let _ = upstream.send(&buf[..n]).await;
            }
            Some((answer, client)) = answers.recv() => {
                let _ = socket.send_to(&answer, client).await;
            }
            Some(ended) = relays.join_next(), if !relays.is_empty() => {
                if let Ok(client) = ended {
                    flows.remove(&client);
                }
            }
        }
    }
}

/// Hands what comes back on `upstream` for `client` to the published socket's task, until the
/// flow has been quiet for [`UDP_FLOW_IDLE`]; returns the client to forget.
async fn relay_answers(
    upstream: std::sync::Arc<tokio::net::UdpSocket>,
    client: SocketAddr,
    answers: tokio::sync::mpsc::Sender<(Vec<u8>, SocketAddr)>,
) -> SocketAddr {
    let mut buf = vec![0u8; UDP_DATAGRAM_MAX];
    loop {
        match tokio::time::timeout(UDP_FLOW_IDLE, upstream.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                if answers.send((buf[..n].to_vec(), client)).await.is_err() {
                    return client;
                }
            }
            // A port unreachable from the container (nothing listens yet) is told once per
            // datagram; the flow goes on.
            Ok(Err(_)) => {}
            Err(_) => return client,
        }
    }
}

/// Bytes copied at a time each way: large transfers are the proxy's usual load.
const COPY_BUFFER: usize = 256 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_read_as_docker_writes_them() {
        let p = parse("8080:80").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.udp, p.host_ip),
            (Some(8080), 80, false, None)
        );
        let p = parse("127.0.0.1::53/udp").unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.container_port, p.udp),
            (Some(Ipv4Addr::LOCALHOST), None, 53, true)
        );
        assert_eq!(parse("80").unwrap().host_port, None);
        assert_eq!(parse("0.0.0.0:1:2").unwrap().host_ip, None);
        for bad in ["", "x:80", "80/sctp", "1:2:3:4", "70000", "0"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_held_port_is_refused_to_another_and_its_proxy_carries_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = upstream.local_addr().unwrap();
        let spec = PortSpec {
            host_ip: Some(Ipv4Addr::LOCALHOST),
            host_port: None,
            container_port: to.port(),
            udp: false,
        };
        let held = hold(&spec).unwrap();
        let port = held.port();
        let again = PortSpec {
            host_port: Some(port),
            ..spec
        };
        let err = hold(&again).err().unwrap().to_string();
        assert!(
            err.contains(&format!("port {port}/tcp is already in use")),
            "{err}"
        );
        let proxy = serve(held, to);
        let server = tokio::spawn(async move {
            let (mut c, _) = upstream.accept().await.unwrap();
            c.write_all(b"through").await.unwrap();
        });
        let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut got = String::new();
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "through");
        server.await.unwrap();
        proxy.abort();
    }

    #[tokio::test]
    async fn a_udp_proxy_carries_each_clients_datagrams_and_the_answers_back() {
        let upstream = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = upstream.local_addr().unwrap();
        let held = hold(&PortSpec {
            host_ip: Some(Ipv4Addr::LOCALHOST),
            host_port: None,
            container_port: to.port(),
            udp: true,
        })
        .unwrap();
        let port = held.port();
        let proxy = serve(held, to);
        // An echo server that answers in capitals.
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            for _ in 0..3 {
                let (n, from) = upstream.recv_from(&mut buf).await.unwrap();
                let answer = buf[..n].to_ascii_uppercase();
                upstream.send_to(&answer, from).await.unwrap();
            }
        });
        let ask = |client: std::sync::Arc<tokio::net::UdpSocket>, what: &'static str| async move {
            client
                .send_to(what.as_bytes(), ("127.0.0.1", port))
                .await
                .unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                client.recv_from(&mut buf),
            )
            .await
            .expect("an answer through the proxy")
            .unwrap();
            assert_eq!(from.port(), port, "answered from the published port");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let one = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let two = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        assert_eq!(ask(one.clone(), "one").await, "ONE");
        assert_eq!(ask(two, "two").await, "TWO");
        assert_eq!(ask(one, "again").await, "AGAIN");
        server.await.unwrap();
        proxy.abort();
    }
}
