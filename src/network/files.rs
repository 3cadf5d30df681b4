//! The files every container gets from its network settings: `/etc/hosts`, `/etc/hostname`
//! and `/etc/resolv.conf`, written in the container's directory and bind-mounted over the
//! image's. Hosts files are rewritten in place (never replaced), so a mounted one changes too.

use std::net::Ipv4Addr;

/// `/etc/hosts`: localhost, the container itself, what `--add-host` gave, and the other
/// containers that share a user network with it (by name and alias).
pub fn hosts(
    hostname: &str,
    own: Option<Ipv4Addr>,
    extra: &[(String, String)],
    peers: &[(Ipv4Addr, Vec<String>)],
) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for (name, ip) in extra {
        out.push_str(&format!("{ip}\t{name}\n"));
    }
    match own {
        Some(ip) => out.push_str(&format!("{ip}\t{hostname}\n")),
        None => out.push_str(&format!("127.0.1.1\t{hostname}\n")),
    }
    for (ip, names) in peers {
        if !names.is_empty() {
            out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
        }
    }
    out
}

/// `/etc/resolv.conf`: `dns` when given, else the host's without its loopback servers (which
/// a container cannot reach), keeping its search and options lines.
pub fn resolv_conf(host: &str, dns: &[String]) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let line = line.trim();
        if let Some(server) = line.strip_prefix("nameserver") {
            let server = server.trim();
            let loopback = server
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
            if dns.is_empty() && !loopback {
                out.push_str(&format!("nameserver {server}\n"));
                servers += 1;
            }
        } else if line.starts_with("search") || line.starts_with("options") {
            out.push_str(line);
            out.push('\n');
        }
    }
    for server in dns {
        out.push_str(&format!("nameserver {server}\n"));
        servers += 1;
    }
    if servers == 0 {
        out.push_str("# no nameserver the container can reach: give one with --dns\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_the_container_its_extras_and_its_peers() {
        let text = hosts(
            "web",
            Some(Ipv4Addr::new(10, 90, 0, 2)),
            &[("db.example".into(), "10.0.0.9".into())],
            &[(
                Ipv4Addr::new(10, 90, 0, 3),
                vec!["api".into(), "backend".into()],
            )],
        );
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.contains("10.0.0.9\tdb.example\n"));
        assert!(text.contains("10.90.0.2\tweb\n"));
        assert!(text.contains("10.90.0.3\tapi backend\n"));
        assert!(hosts("solo", None, &[], &[]).contains("127.0.1.1\tsolo\n"));
    }

    #[test]
    fn resolv_conf_drops_loopback_servers_and_takes_dns() {
        let host = "nameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch corp\noptions ndots:2\n";
        assert_eq!(
            resolv_conf(host, &[]),
            "nameserver 192.0.2.1\nsearch corp\noptions ndots:2\n"
        );
        assert_eq!(
            resolv_conf(host, &["9.9.9.9".into()]),
            "search corp\noptions ndots:2\nnameserver 9.9.9.9\n"
        );
        assert!(resolv_conf("nameserver 127.0.0.1\n", &[]).contains("give one with --dns"));
    }
}
