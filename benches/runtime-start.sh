#!/usr/bin/env bash
# Benchmark: container start-to-exit time of `wharf runtime run` against runc (Debian's `runc`)
# on the same busybox bundle running `true`, alternated in one run, with the floor
# `unshare --pid --mount --uts --ipc --net --fork /bin/true`. Prints medians and ratios.
#
#   sudo benches/runtime-start.sh [ROUNDS]      (default 40 rounds; needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-40}

. benches/common.sh
prepare runc busybox-static util-linux python3

work=$(mktemp -d)
# Container state goes where both runtimes keep it by default (/run/runc, /run/wharf/runtime),
# which is a tmpfs on a normal host. Some hosts (build containers) have /run on the root disk,
# where every state-dir removal waits for a discard: mount a tmpfs of our own, for both.
state=$(mktemp -d -p /run wharf-bench.XXXXXX)
mount -t tmpfs -o mode=0711,size=16m wharf-bench "$state"
trap 'umount "$state"; rm -rf "$work"; rmdir "$state"' EXIT
bundle=$work/bundle
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$bundle/rootfs/bin/$applet"
done
(cd "$bundle" && "$wharf" runtime spec)
python3 - "$bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
spec = json.load(open(path))
spec["process"]["args"] = ["/bin/true"]
spec["linux"]["cgroupsPath"] = "/wharf-bench/ctr"
json.dump(spec, open(path, "w"))
PY

python3 - "$rounds" "$wharf" "$bundle" "$state" <<'PY'
import statistics, subprocess, sys, time
rounds, wharf, bundle, work = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
commands = {
    "wharf": [wharf, "runtime", "--root", f"{work}/wharf-state", "run", "--bundle", bundle, "bench"],
    "runc": ["runc", "--root", f"{work}/runc-state", "run", "--bundle", bundle, "bench"],
    "floor": ["unshare", "--pid", "--mount", "--uts", "--ipc", "--net", "--fork", "/bin/true"],
}
times = {name: [] for name in commands}
for name, cmd in commands.items():  # warm up each once
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
for _ in range(rounds):
    for name, cmd in commands.items():
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
        times[name].append((time.perf_counter() - start) * 1000)
med = {name: statistics.median(values) for name, values in times.items()}
print(f"rounds: {rounds}, alternated; median start-to-exit of a busybox container running true")
for name in commands:
    print(f"  {name:6} {med[name]:7.2f} ms   (min {min(times[name]):.2f}, max {max(times[name]):.2f})")
print(f"wharf / runc  = {med['wharf'] / med['runc']:.3f}   (goal: at most 0.2)")
print(f"wharf / floor = {med['wharf'] / med['floor']:.3f}   (goal: at most 2)")
PY
rmdir /sys/fs/cgroup/*/wharf-bench 2>/dev/null || rmdir /sys/fs/cgroup/wharf-bench 2>/dev/null || true
