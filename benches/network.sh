#!/usr/bin/env bash
# Benchmark: a large download from busybox httpd through a published port of wharf and of
# docker (both daemons with their default bridge networks, in a network namespace this script
# makes, so the host's network is left alone), over loopback (the userland proxies) and over
# the bridge address (DNAT); and what a bridge network adds to `run --rm IMAGE true` over
# `--network none`. Prints medians and ratios.
#
#   sudo benches/network.sh [ROUNDS]      (default 5 downloads and 30 runs each; needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}

if [ "${WHARF_BENCH_IN_NETNS:-}" != 1 ]; then
    . benches/common.sh
    prepare docker.io busybox-static curl nftables iptables util-linux python3
    export WHARF_BENCH_IN_NETNS=1
    exec unshare --net --fork -- "$0" "$@"
fi
ip link set lo up
. benches/common.sh
wharf=$PWD/target/release/wharf
work=$(mktemp -d)
pids=()
cleanup() {
    W rm -f wsrv >/dev/null 2>&1 || true
    D rm -f dsrv >/dev/null 2>&1 || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    umount -R "$work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$wharf" serve --data-root "$work/wharf" --socket "$work/wharf.sock" --listen none \
    --registry-listen none >"$work/wharf.log" 2>&1 &
pids+=($!)
dockerd --data-root "$work/docker" --exec-root "$work/docker-exec" --pidfile "$work/docker.pid" \
    --host "unix://$work/docker.sock" >"$work/dockerd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    [ -S "$work/wharf.sock" ] && D version >/dev/null 2>&1 && break
    sleep 0.3
done
load_busybox_in_both

serve='mkdir -p /www && dd if=/dev/zero of=/www/big bs=1M count=512 2>/dev/null && httpd -f -p 80 -h /www'
W run -d --name wsrv -p 18080:80 bench/busybox:latest sh -c "$serve" >/dev/null
D run -d --name dsrv -p 18081:80 bench/busybox:latest sh -c "$serve" >/dev/null
for port in 18080 18081; do
    for _ in $(seq 100); do
        curl -s -o /dev/null -r 0-0 "http://127.0.0.1:$port/big" && break
        sleep 0.2
    done
done
wharf_gw=$(W network inspect bridge | python3 -c 'import json,sys; print(json.load(sys.stdin)["gateway"])')
docker_gw=$(D inspect dsrv -f "{{.NetworkSettings.Gateway}}")

python3 - "$rounds" "$wharf" "$work" "$wharf_gw" "$docker_gw" <<'PY'
import statistics, subprocess, sys, time
rounds, wharf, work, wgw, dgw = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
def download(url):
    start = time.perf_counter()
    subprocess.run(["curl", "-s", "-o", "/dev/null", url], check=True)
    return 512 / (time.perf_counter() - start)  # MiB/s
cases = {
    "loopback": {"wharf": "http://127.0.0.1:18080/big", "docker": "http://127.0.0.1:18081/big"},
    "bridge address": {"wharf": f"http://{wgw}:18080/big", "docker": f"http://{dgw}:18081/big"},
}
print(f"rounds: {rounds}, alternated; median throughput of a 512 MiB download from busybox httpd")
for case, urls in cases.items():
    speeds = {name: [] for name in urls}
    for _ in range(rounds):
        for name, url in urls.items():
            speeds[name].append(download(url))
    med = {name: statistics.median(v) for name, v in speeds.items()}
    print(f"  {case:15} wharf {med['wharf']:8.1f} MiB/s   docker {med['docker']:8.1f} MiB/s   "
          f"wharf / docker = {med['wharf'] / med['docker']:.2f} (goal: at least 1)")

W = [wharf, "-H", f"unix://{work}/wharf.sock", "run", "--rm"]
runs = {"bridge": W + ["bench/busybox:latest", "true"],
        "none": W + ["--network", "none", "bench/busybox:latest", "true"]}
times = {name: [] for name in runs}
for cmd in runs.values():
    subprocess.run(cmd, check=True)
for _ in range(30):
    for name, cmd in runs.items():
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        times[name].append((time.perf_counter() - start) * 1000)
med = {name: statistics.median(v) for name, v in times.items()}
print(f"wharf run --rm true: bridge {med['bridge']:.1f} ms, none {med['none']:.1f} ms, "
      f"the bridge adds {med['bridge'] - med['none']:.1f} ms (goal: under 5)")
PY
