#!/usr/bin/env bash
# Benchmark: the same Dockerfile built by `wharf build` and by `docker build` (the legacy
# builder of Debian's docker.io, DOCKER_BUILDKIT=0) from the same busybox base: cold
# (--no-cache) and fully cached, alternated in one run; prints medians and the ratios.
#
#   sudo benches/build.sh [ROUNDS]    (default 5; needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}

. benches/common.sh
prepare docker.io busybox-static python3 pkg-config libseccomp-dev

start_work

start_wharf_and_dockerd
load_busybox_in_both

# The context: a directory of small files, one 8 MiB file, and a Dockerfile with the usual
# mix of steps (metadata, COPY, RUN).
ctx=$work/context
mkdir -p "$ctx/files"
for i in $(seq 1 100); do echo "file $i" >"$ctx/files/f$i.txt"; done
head -c 8388608 /dev/urandom >"$ctx/big.bin"
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM bench/busybox:latest
ENV APP=/app
WORKDIR /app
COPY files/ /app/files/
RUN echo one > /app/one.txt
RUN for i in $(seq 1 200); do echo $i > /app/n$i; done
COPY big.bin /app/
RUN rm /app/n1 && mkdir -p /app/data
LABEL bench=1
CMD ["cat", "/app/one.txt"]
DOCKERFILE

python3 - "$rounds" "$wharf" "$work" "$ctx" <<'PY'
import os, statistics, subprocess, sys, time
rounds, wharf, work, ctx = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
env = dict(os.environ, DOCKER_BUILDKIT="0")
def cmd(name, cold):
    extra = ["--no-cache"] if cold else []
    if name == "wharf":
        return [wharf, "-H", f"unix://{work}/wharf.sock", "build", "-q", "-t", "bench/built:latest", *extra, ctx]
    return ["/usr/bin/docker", "-H", f"unix://{work}/docker.sock", "build", "-q", "--network", "none",
            "-t", "bench/built:latest", *extra, ctx]
times = {(n, c): [] for n in ("wharf", "docker") for c in (True, False)}
for n in ("wharf", "docker"):  # warm up (and fill the caches)
    subprocess.run(cmd(n, False), check=True, stdout=subprocess.DEVNULL, env=env)
for _ in range(rounds):
    for cold in (True, False):
        for n in ("wharf", "docker"):
            start = time.perf_counter()
            subprocess.run(cmd(n, cold), check=True, stdout=subprocess.DEVNULL, env=env)
            times[(n, cold)].append((time.perf_counter() - start) * 1000)
print(f"rounds: {rounds}, alternated; median of a build of the same Dockerfile (4 layer steps)")
for cold, label, goal in ((True, "cold (--no-cache)", 2), (False, "fully cached", 5)):
    w, d = statistics.median(times[("wharf", cold)]), statistics.median(times[("docker", cold)])
    print(f"  {label}:")
    print(f"    wharf  {w:8.1f} ms   (min {min(times[('wharf', cold)]):.1f})")
    print(f"    docker {d:8.1f} ms   (min {min(times[('docker', cold)]):.1f})")
    print(f"    docker / wharf = {d / w:.2f}x   (goal: at least {goal}x)")
PY
