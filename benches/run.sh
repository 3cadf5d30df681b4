#!/usr/bin/env bash
# Benchmark: `wharf run --rm IMAGE true` against `docker run --rm --network none IMAGE true`
# on the same busybox image (Debian's docker.io, a dockerd started here in its own
# directories), alternated in one run; prints medians and the ratio.
#
#   sudo benches/run.sh [ROUNDS]      (default 20; needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}

. benches/common.sh
prepare docker.io busybox-static python3 pkg-config libseccomp-dev

start_work

start_wharf_and_dockerd
load_busybox_in_both

python3 - "$rounds" "$wharf" "$work" <<'PY'
import statistics, subprocess, sys, time
rounds, wharf, work = int(sys.argv[1]), sys.argv[2], sys.argv[3]
commands = {
    "wharf": [wharf, "-H", f"unix://{work}/wharf.sock", "run", "--rm", "bench/busybox:latest", "true"],
    "docker": ["/usr/bin/docker", "-H", f"unix://{work}/docker.sock", "run", "--rm", "--network", "none",
               "bench/busybox:latest", "true"],
}
times = {name: [] for name in commands}
for cmd in commands.values():  # warm up
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
for _ in range(rounds):
    for name, cmd in commands.items():
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times[name].append((time.perf_counter() - start) * 1000)
med = {name: statistics.median(v) for name, v in times.items()}
print(f"rounds: {rounds}, alternated; median of run --rm IMAGE true")
for name in commands:
    print(f"  {name:6} {med[name]:8.1f} ms   (min {min(times[name]):.1f}, max {max(times[name]):.1f})")
print(f"docker / wharf = {med['docker'] / med['wharf']:.2f}x   (goal: at least 10x)")
PY
