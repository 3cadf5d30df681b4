//! Networking with a daemon inside a network namespace the test makes: its bridges, veth
//! pairs and nftables table live and die there, and no address outside it is contacted.

use crate::fixtures::{self, ImageBuilder};
use crate::harness::{self, DaemonProcess, run_wharf, wait_until, wharf_command};

const IMAGE: &str = "wharf-test/busybox:latest";

fn daemon(test: &str) -> Option<(harness::Netns, DaemonProcess)> {
    if harness::skip_unless_root(test) {
        return None;
    }
    let busybox = fixtures::busybox(test)?;
    if harness::skip_unless_installed(test, "/usr/sbin/nft", "nftables") {
        return None;
    }
    let netns = harness::Netns::new();
    let daemon = DaemonProcess::start_in(&netns);
    harness::load_busybox(&host(&daemon), daemon.dir.path(), &busybox);
    Some((netns, daemon))
}

fn host(daemon: &DaemonProcess) -> String {
    format!("unix://{}", daemon.socket.display())
}

fn wharf(daemon: &DaemonProcess, args: &[&str]) -> (std::process::ExitStatus, String, String) {
    run_wharf(wharf_command().args(["-H", &host(daemon)]).args(args))
}

/// The interfaces of the daemon's namespace (its view of /proc/net/dev).
fn links(daemon: &DaemonProcess) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{}/net/dev", daemon.pid()))
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_owned()))
        .collect()
}

/// `nft list tables` inside the daemon's namespace.
fn nft_tables(daemon: &DaemonProcess) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", daemon.pid()))
        .args(["nft", "list", "tables"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the named containers however the test ends (their namespaces hold mounts); by the
/// daemon's socket, which stays the same across a restart.
struct RemoveAll(String, Vec<&'static str>);

impl RemoveAll {
    fn new(daemon: &DaemonProcess, names: Vec<&'static str>) -> RemoveAll {
        RemoveAll(host(daemon), names)
    }
}

impl Drop for RemoveAll {
    fn drop(&mut self) {
        for name in &self.1 {
            let _ = run_wharf(wharf_command().args(["-H", &self.0, "rm", "-f", name]));
        }
    }
}

#[test]
fn user_networks_resolve_names_isolate_each_other_and_leave_nothing_behind() {
    let test = "network::user_networks_resolve_names_isolate_each_other_and_leave_nothing_behind";
    let Some((_netns, d)) = daemon(test) else {
        return;
    };
    let _cleanup = RemoveAll::new(&d, vec!["web", "stranger"]);
    for (name, subnet) in [("appnet", None), ("other", Some("10.77.0.0/24"))] {
        let mut args = vec!["network", "create"];
        if let Some(s) = subnet {
            args.extend(["--subnet", s]);
        }
        args.push(name);
        let (status, _, err) = wharf(&d, &args);
        assert!(status.success(), "{err}");
    }
    let (status, _, err) = wharf(
        &d,
        &["network", "create", "--subnet", "10.77.0.0/16", "clash"],
    );
    assert!(!status.success() && err.contains("overlaps"), "{err}");

    // A server on appnet, reached by name (and alias) from another container there.
    let serve = "mkdir -p /www && echo hello-from-web > /www/index.html && httpd -f -p 80 -h /www";
    let (status, _, err) = wharf(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "appnet",
            "--network-alias",
            "www",
            IMAGE,
            "sh",
            "-c",
            serve,
        ],
    );
    assert!(status.success(), "{err}");
    // busybox-static's wget crashes wherever /proc is mounted (its NSS lookups), so HTTP is
    // spoken with nc: the body ends the answer.
    let fetch = |network: &str, host: &str| {
        let request = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} 80");
        wharf(
            &d,
            &[
                "run",
                "--rm",
                "--network",
                network,
                IMAGE,
                "sh",
                "-c",
                &request,
            ],
        )
    };
    wait_until("httpd answers by name", || {
        fetch("appnet", "web").1.ends_with("hello-from-web\n")
    });
    let (status, out, err) = fetch("appnet", "www");
    assert!(
        status.success() && out.ends_with("hello-from-web\n"),
        "{out}{err}"
    );

    let (status, out, err) = wharf(&d, &["network", "inspect", "appnet"]);
    assert!(status.success(), "{err}");
    let view: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ip = view["containers"][0]["ip"].as_str().unwrap().to_owned();
    assert!(ip.starts_with("10.90."), "{view}");

    // Another network cannot reach it, not even by address (which works from its own).
    let (_, out, _) = fetch("appnet", &ip);
    assert!(
        out.ends_with("hello-from-web\n"),
        "by address on its network: {out}"
    );
    let (_, out, _) = fetch("other", &ip);
    assert!(
        !out.contains("hello-from-web"),
        "networks are isolated: {out}"
    );
    // A static address on a user network; a taken one is refused by name.
    let (status, out, err) = wharf(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "other",
            "--ip",
            "10.77.0.50",
            IMAGE,
            "sh",
            "-c",
            "ip -4 -o addr show eth0 && ip -o link show eth0",
        ],
    );
    // The hardware address is made from the address, so one handed out again keeps it.
    assert!(
        status.success()
            && out.contains("10.77.0.50/24")
            && out.contains("link/ether 02:57:0a:4d:00:32"),
        "{out}{err}"
    );
    let (status, _, err) = wharf(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "appnet",
            "--ip",
            &ip,
            IMAGE,
            "true",
        ],
    );
    assert!(!status.success() && err.contains("already in use"), "{err}");
    // none: only loopback; /etc/hosts names the container, --add-host adds lines.
    let (status, out, err) = wharf(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--hostname",
            "lonely",
            "--add-host",
            "db.test:10.1.2.3",
            IMAGE,
            "sh",
            "-c",
            "cat /proc/net/dev | tail -n +3 | cut -d: -f1; cat /etc/hosts /etc/hostname",
        ],
    );
    assert!(status.success(), "{err}");
    assert_eq!(out.lines().next().map(str::trim), Some("lo"), "{out}");
    assert!(!out.contains("eth0"), "{out}");
    assert!(
        out.contains("10.1.2.3\tdb.test") && out.contains("lonely"),
        "{out}"
    );
    // The default network: an address from its subnet and a way out through the bridge.
    let (status, out, err) = wharf(
        &d,
        &[
            "run", "--rm", IMAGE, "ip", "-4", "-o", "addr", "show", "eth0",
        ],
    );
    assert!(status.success() && out.contains("172.30.0."), "{out}{err}");

    // Addresses come back; an unused network goes with its bridge; the last takes the table.
    let (status, _, err) = wharf(&d, &["network", "rm", "appnet"]);
    assert!(
        !status.success() && err.contains("in use by container(s) web"),
        "{err}"
    );
    let (status, _, err) = wharf(&d, &["rm", "-f", "web"]);
    assert!(status.success(), "{err}");
    let (_, out, _) = wharf(&d, &["network", "inspect", "appnet"]);
    assert!(out.contains("\"containers\": []"), "{out}");
    assert!(nft_tables(&d).contains("table ip wharf"));
    for name in ["appnet", "other", "bridge"] {
        let (status, _, err) = wharf(&d, &["network", "rm", name]);
        assert!(status.success(), "{name}: {err}");
    }
    assert_eq!(links(&d), ["lo"], "no bridge or veth is left");
    assert!(!nft_tables(&d).contains("wharf"), "the table is gone");
    let netns = d.data_root.join("netns");
    let left: Vec<_> = std::fs::read_dir(&netns)
        .map(|r| r.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "no namespace file is left: {left:?}");
}

#[test]
fn published_ports_reach_containers_and_outlive_a_daemon_restart() {
    let test = "network::published_ports_reach_containers_and_outlive_a_daemon_restart";
    let Some((netns, mut d)) = daemon(test) else {
        return;
    };
    let busybox = fixtures::busybox(test).unwrap();
    let archive = d.dir.path().join("exposing.tar");
    ImageBuilder::busybox(&busybox)
        .expose("80/tcp")
        .build()
        .write_docker_archive(&archive, "wharf-test/exposing:latest");
    let (status, _, err) = run_wharf(
        wharf_command()
            .args(["-H", &host(&d), "load", "-q", "-i"])
            .arg(&archive),
    );
    assert!(status.success(), "{err}");
    let _cleanup = RemoveAll::new(&d, vec!["pub", "clash", "auto", "again"]);
    let serve = |text: &str| {
        format!("mkdir -p /www && echo {text} > /www/index.html && httpd -f -p 80 -h /www")
    };
    // What a client in the namespace gets from address:port (nc: see the test above).
    let get = |netns: &harness::Netns, addr: &str, port: &str| {
        netns.sh(&format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {addr} {port}"
        ))
    };
    let (status, _, err) = wharf(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "pub",
            "-p",
            "8080:80",
            IMAGE,
            "sh",
            "-c",
            &serve("published"),
        ],
    );
    assert!(status.success(), "{err}");
    // Through the proxy on loopback, and by DNAT on the host's own (bridge) address.
    wait_until("the published port answers", || {
        get(&netns, "127.0.0.1", "8080").ends_with("published\n")
    });
    assert!(get(&netns, "172.30.0.1", "8080").ends_with("published\n"));
    let (_, out, _) = wharf(&d, &["ps"]);
    assert!(out.contains("0.0.0.0:8080->80/tcp"), "{out}");

    // A taken host port is refused by name, and the container does not start.
    let (status, _, err) = wharf(
        &d,
        &[
            "run", "-d", "--name", "clash", "-p", "8080:80", IMAGE, "sleep", "60",
        ],
    );
    assert!(!status.success(), "a second container on 8080");
    assert!(err.contains("8080") && err.contains("already"), "{err}");
    wharf(&d, &["rm", "-f", "clash"]);
    // -P: the exposed port on a free host port.
    let (status, _, err) = wharf(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "auto",
            "-P",
            "wharf-test/exposing:latest",
            "sh",
            "-c",
            &serve("auto"),
        ],
    );
    assert!(status.success(), "{err}");
    // The list and inspect agree on its ports and address.
    let (_, list, _) = wharf(&d, &["ps", "--format", "json"]);
    let (_, one, _) = wharf(&d, &["inspect", "auto"]);
    let one: serde_json::Value = serde_json::from_str(&one).unwrap();
    let listed: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    let listed = listed.iter().find(|c| c["name"] == "auto").unwrap();
    assert_eq!(listed["network_settings"], one["network_settings"]);
    assert_eq!(one["network_settings"]["ports"][0]["container_port"], 80);
    let (_, out, _) = wharf(&d, &["port", "auto"]);
    let auto_port = out.trim().rsplit(':').next().unwrap().to_owned();
    assert!(
        out.starts_with("80/tcp -> 0.0.0.0:") && auto_port != "8080",
        "{out}"
    );
    wait_until("the -P port answers", || {
        get(&netns, "127.0.0.1", &auto_port).ends_with("auto\n")
    });

    // The daemon killed and started again: the ports are served again.
    d.kill_and_restart_in(&netns);
    wait_until("the port answers after the restart", || {
        get(&netns, "127.0.0.1", "8080").ends_with("published\n")
    });
    assert!(get(&netns, "172.30.0.1", &auto_port).ends_with("auto\n"));

    // Removed: its port is free for another.
    let (status, _, err) = wharf(&d, &["rm", "-f", "pub"]);
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "again",
            "-p",
            "8080:80",
            IMAGE,
            "sh",
            "-c",
            &serve("again"),
        ],
    );
    assert!(status.success(), "{err}");
    wait_until("the freed port answers", || {
        get(&netns, "127.0.0.1", "8080").ends_with("again\n")
    });
    let (status, _, err) = wharf(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-p",
            "81:80",
            IMAGE,
            "true",
        ],
    );
    assert!(
        !status.success() && err.contains("bridge networks only"),
        "{err}"
    );
}

#[test]
fn network_connect_adds_an_interface_that_stays_until_disconnect() {
    let test = "network::network_connect_adds_an_interface_that_stays_until_disconnect";
    let Some((_netns, d)) = daemon(test) else {
        return;
    };
    let _cleanup = RemoveAll::new(&d, vec!["srv", "cli"]);
    for net in ["front", "back"] {
        let (status, _, err) = wharf(&d, &["network", "create", net]);
        assert!(status.success(), "{err}");
    }
    let serve = "mkdir -p /www && echo from-back > /www/index.html && httpd -f -p 80 -h /www";
    let (status, _, err) = wharf(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "srv",
            "--network",
            "back",
            IMAGE,
            "sh",
            "-c",
            serve,
        ],
    );
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "cli",
            "--network",
            "front",
            IMAGE,
            "sleep",
            "300",
        ],
    );
    assert!(status.success(), "{err}");
    let reach = || {
        wharf(
            &d,
            &["exec", "cli", "sh", "-c",
              "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 srv 80; ip -o -4 addr show | cut -d' ' -f2"],
        )
        .1
    };
    assert!(!reach().contains("from-back"), "not connected yet");
    let (status, _, err) = wharf(
        &d,
        &["network", "connect", "--alias", "client", "back", "cli"],
    );
    assert!(status.success(), "{err}");
    let out = reach();
    assert!(out.contains("from-back") && out.contains("eth1"), "{out}");
    // The list (read in a few queries for all containers) tells the same as inspect (one
    // container's own queries): both networks and their addresses.
    let (_, list, _) = wharf(&d, &["ps", "--format", "json"]);
    let (_, one, _) = wharf(&d, &["inspect", "cli"]);
    let one: serde_json::Value = serde_json::from_str(&one).unwrap();
    let listed: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    let listed = listed.iter().find(|c| c["name"] == "cli").unwrap();
    assert_eq!(listed["network_settings"], one["network_settings"]);
    assert_eq!(
        one["network_settings"]["networks"]
            .as_object()
            .map(|n| n.len()),
        Some(2),
        "{one}"
    );
    let (_, hosts, _) = wharf(&d, &["exec", "srv", "cat", "/etc/hosts"]);
    assert!(hosts.contains("cli") && hosts.contains("client"), "{hosts}");
    let (status, _, err) = wharf(&d, &["network", "connect", "back", "cli"]);
    assert!(
        !status.success() && err.contains("already on network back"),
        "{err}"
    );

    // It stays across a restart of the container.
    let (status, _, err) = wharf(&d, &["restart", "-t", "1", "cli"]);
    assert!(status.success(), "{err}");
    assert!(reach().contains("from-back"));
    let (status, _, err) = wharf(&d, &["network", "disconnect", "back", "cli"]);
    assert!(status.success(), "{err}");
    let out = reach();
    assert!(!out.contains("from-back") && !out.contains("eth1"), "{out}");
    let (_, hosts, _) = wharf(&d, &["exec", "srv", "cat", "/etc/hosts"]);
    assert!(!hosts.contains("client"), "{hosts}");
}

#[test]
fn published_ports_show_the_client_address_and_carry_udp() {
    let test = "network::published_ports_show_the_client_address_and_carry_udp";
    let Some((netns, d)) = daemon(test) else {
        return;
    };
    let Some(perl) = ["/usr/bin/perl"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        harness::skip(test, "perl is missing (Debian's perl-base)");
        return;
    };
    let _cleanup = RemoveAll::new(&d, vec!["whoami", "udp"]);
    // A client on a host of its own: a namespace behind a veth pair, 10.201.0.2, which reaches
    // the daemon's host at 10.201.0.1.
    let client = harness::Netns::new();
    let ip = |ns: &harness::Netns, script: &str| {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", ns.path.display()))
            .args([
                "sh",
                "-ec",
                &format!("PATH=/usr/sbin:/sbin:$PATH\n{script}"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(
        &netns,
        &format!(
            "ip link add wcl0 type veth peer name wcl1 netns {}
             ip addr add 10.201.0.1/24 dev wcl0
             ip link set wcl0 up",
            client.path.display()
        ),
    );
    ip(
        &client,
        "ip addr add 10.201.0.2/24 dev wcl1\nip link set wcl1 up",
    );

    // TCP by DNAT: the server sees the client's own address (busybox httpd gives it to CGI).
    let serve = "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho \"peer=$REMOTE_ADDR\"\\n' > /www/cgi-bin/peer && chmod +x /www/cgi-bin/peer && httpd -f -p 80 -h /www";
    let (status, _, err) = wharf(
        &d,
        &[
            "run", "-d", "--name", "whoami", "-p", "8080:80", IMAGE, "sh", "-c", serve,
        ],
    );
    assert!(status.success(), "{err}");
    let ask = "printf 'GET /cgi-bin/peer HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 10.201.0.1 8080";
    wait_until("the published port answers the other host", || {
        client.sh(ask).contains("peer=")
    });
    let out = client.sh(ask);
    // (busybox httpd listens on IPv6 and gives IPv4 peers as [::ffff:a.b.c.d].)
    assert!(out.contains("10.201.0.2"), "{out}");

    // UDP: an echo server (Debian's perl, from the host's /usr) that tells whom it answers.
    let mounts = ["/usr:/usr:ro", "/usr/lib:/lib:ro", "/usr/lib64:/lib64:ro"];
    let echo = r#"use Socket; socket(S, PF_INET, SOCK_DGRAM, 0) or die; bind(S, sockaddr_in(5353, INADDR_ANY)) or die; while (my $from = recv(S, my $m, 1500, 0)) { my ($port, $addr) = sockaddr_in($from); send(S, "$m from " . inet_ntoa($addr), 0, $from) }"#;
    let mut args = vec!["run", "-d", "--name", "udp", "-p", "5353:5353/udp"];
    for m in &mounts {
        args.extend(["-v", m]);
    }
    args.extend([IMAGE, perl, "-e", echo]);
    let (status, _, err) = wharf(&d, &args);
    assert!(status.success(), "{err}");
    let udp_ask = |ns: &harness::Netns, to: &str| {
        let script = format!(
            r#"use Socket; socket(S, PF_INET, SOCK_DGRAM, 0) or die; my $to = sockaddr_in(5353, inet_aton("{to}")); for (1..20) {{ send(S, "ping", 0, $to); my $r = ""; vec(my $in = "", fileno(S), 1) = 1; if (select($in, undef, undef, 0.5)) {{ recv(S, $r, 1500, 0); print $r; exit }} }}"#
        );
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", ns.path.display()))
            .args([perl, "-e", &script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // From loopback, through the daemon's proxy (whose address the server sees).
    let out = udp_ask(&netns, "127.0.0.1");
    assert!(
        out.starts_with("ping from "),
        "through the loopback proxy: {out:?}"
    );
    // From the other host, by DNAT: its own address.
    let out = udp_ask(&client, "10.201.0.1");
    assert_eq!(out, "ping from 10.201.0.2", "by DNAT");
}
