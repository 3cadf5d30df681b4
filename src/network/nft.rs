//! The nftables rules of wharf's networks, all in a table of wharf's own (`ip wharf`): outbound
//! NAT for each network's subnet, no forwarding between two networks' bridges, and the
//! published ports (DNAT of what reaches the host's own addresses, so the container sees the
//! client's address; loopback is served by the daemon's proxy). The whole
//! table is written in one `nft -f` transaction from the list of networks, and deleted with the
//! last network; nothing outside it is touched.

use std::io::Write;
use std::process::{Command, Stdio};

use super::NetworkError;

/// What the rules need of one network.
pub struct Rules<'a> {
    pub bridge: &'a str,
    pub subnet: &'a str,
}

/// A published port.
pub struct Dnat<'a> {
    /// `0.0.0.0`: every address of the host.
    pub host_ip: &'a str,
    pub host_port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'a str,
    pub to_ip: &'a str,
    pub to_port: u16,
}

/// The ruleset for `networks` and `ports` (the table made anew), or the table's removal when
/// no network is left.
pub fn render(networks: &[Rules], ports: &[Dnat]) -> String {
    // Adding the table first makes the delete valid even when it does not exist yet.
    let mut out = String::from("table ip wharf {}\ndelete table ip wharf\n");
    if networks.is_empty() {
        return out;
    }
    out.push_str("table ip wharf {\n");
    out.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    for n in networks {
        out.push_str(&format!(
            "    ip saddr {} oifname != \"{}\" masquerade\n",
            n.subnet, n.bridge
        ));
        // A container reaching a published port of its own network through the host:
        // the answer must come back the way it went.
        out.push_str(&format!(
            "    ct status dnat ip saddr {} oifname \"{}\" masquerade\n",
            n.subnet, n.bridge
        ));
    }
    out.push_str("  }\n");
    // Loopback is the proxy's: DNAT takes only the host's other addresses (a packet from the
    // outside addressed to 127.0.0.1 must not reach a port published on loopback).
    let dnat = |p: &Dnat| {
        let mut rule = String::from("    ip daddr != 127.0.0.0/8 ");
        if p.host_ip != "0.0.0.0" {
            rule.push_str(&format!("ip daddr {} ", p.host_ip));
        }
        rule.push_str(&format!(
            "fib daddr type local {} dport {} dnat to {}:{}\n",
            p.protocol, p.host_port, p.to_ip, p.to_port
        ));
        rule
    };
    out.push_str(
        "  chain prerouting {\n    type nat hook prerouting priority -100; policy accept;\n",
    );
    let routable: Vec<&Dnat> = ports
        .iter()
        .filter(|p| {
            !p.host_ip
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
        })
        .collect();
    for p in &routable {
        out.push_str(&dnat(p));
    }
    out.push_str("  }\n");
    out.push_str("  chain output {\n    type nat hook output priority -100; policy accept;\n");
    for p in &routable {
        out.push_str(&dnat(p));
    }
    out.push_str("  }\n");
    out.push_str(
        "  chain forward {\n    type filter hook forward priority filter; policy accept;\n",
    );
    // Into a bridge: answers, traffic of its own, and published ports; nothing else (the
    // host forwards once networks exist, and must not route strangers to containers).
    out.push_str("    ct state established,related accept\n");
    for n in networks {
        out.push_str(&format!(
            "    iifname \"{b}\" oifname \"{b}\" accept\n    oifname \"{b}\" ct status dnat accept\n    oifname \"{b}\" drop\n",
            b = n.bridge
        ));
    }
    for from in networks {
        for to in networks.iter().filter(|t| t.bridge != from.bridge) {
            out.push_str(&format!(
                "    iifname \"{}\" oifname \"{}\" drop\n",
                from.bridge, to.bridge
            ));
        }
    }
    out.push_str("  }\n}\n");
    out
}

/// Applies [`render`]'s ruleset with `nft`.
pub fn apply(networks: &[Rules], ports: &[Dnat]) -> Result<(), NetworkError> {
    let script = render(networks, ports);
    let fail = |reason: String| NetworkError::Firewall { reason };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            fail(format!(
                "cannot run nft ({e}): install the nftables package"
            ))
        })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_isolates_bridges_and_goes_with_the_last_network() {
        let rules = render(
            &[
                Rules {
                    bridge: "wharf0",
                    subnet: "172.30.0.0/16",
                },
                Rules {
                    bridge: "wh-1",
                    subnet: "10.90.0.0/24",
                },
            ],
            &[Dnat {
                host_ip: "0.0.0.0",
                host_port: 8080,
                protocol: "tcp",
                to_ip: "172.30.0.2",
                to_port: 80,
            }],
        );
        assert!(rules.contains("ip saddr 172.30.0.0/16 oifname != \"wharf0\" masquerade"));
        assert!(rules.contains("iifname \"wharf0\" oifname \"wh-1\" drop"));
        assert!(rules.contains("iifname \"wh-1\" oifname \"wharf0\" drop"));
        assert_eq!(
            rules
                .matches("ip daddr != 127.0.0.0/8 fib daddr type local tcp dport 8080 dnat to 172.30.0.2:80")
                .count(),
            2,
            "prerouting and output: {rules}"
        );
        assert!(
            rules.contains("oifname \"wharf0\" ct status dnat accept\n    oifname \"wharf0\" drop")
        );
        // A port published on loopback only is the proxy's alone.
        let local = render(
            &[Rules {
                bridge: "wharf0",
                subnet: "172.30.0.0/16",
            }],
            &[Dnat {
                host_ip: "127.0.0.1",
                host_port: 5432,
                protocol: "tcp",
                to_ip: "172.30.0.3",
                to_port: 5432,
            }],
        );
        assert!(
            local.contains("chain prerouting") && !local.contains("dport 5432"),
            "{local}"
        );
        let none = render(&[], &[]);
        assert_eq!(none, "table ip wharf {}\ndelete table ip wharf\n");
    }
}
