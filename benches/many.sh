#!/usr/bin/env bash
# Benchmark: 100 containers started in parallel (10 clients at a time) and then removed, wharf
# against docker (Debian's docker.io, a dockerd started here) on the same busybox image, with
# the memory they hold: the daemon's RSS idle and with 100 running, and the per-container
# supervisor (wharf's shim, containerd-shim-runc-v2 for docker).
#
#   sudo benches/many.sh [COUNT]      (default 100; needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-100}

. benches/common.sh
prepare docker.io busybox-static python3 pkg-config libseccomp-dev

start_work

start_wharf_and_dockerd
load_busybox_in_both

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
sum_rss_of() { # processes whose command line matches $1: RSS total, count, PSS total
    local total=0 n=0 pss=0
    for p in $(pgrep -f "$1" || true); do
        [ "$p" = "$wharf_pid" ] && continue
        total=$((total + $(rss_kib "$p"))); pss=$((pss + $(pss_kib "$p"))); n=$((n + 1))
    done
    echo "$total $n $pss"
}
wharf_idle=$(rss_kib $wharf_pid)

time_it() { local s e; s=$(date +%s.%N); "$@"; e=$(date +%s.%N); python3 -c "print($e - $s)"; }
wharf_start=$(time_it sh -c "seq $count | xargs -P 10 -I{} $wharf -H unix://$work/wharf.sock run -d bench/busybox:latest sleep 3600 >/dev/null")
# Idle supervisors: a shim lets go of what its wait does not use after 2 s without output.
sleep 3
wharf_running=$(rss_kib $wharf_pid)
read -r shim_total shim_n shim_pss < <(sum_rss_of "wharf __shim")
wharf_stop=$(time_it sh -c "W() { $wharf -H unix://$work/wharf.sock \"\$@\"; }; W rm -f \$(W ps -aq) >/dev/null")

docker_start=$(time_it sh -c "seq $count | xargs -P 10 -I{} /usr/bin/docker -H unix://$work/docker.sock run -d --network none bench/busybox:latest sleep 3600 >/dev/null")
sleep 3
read -r cshim_total cshim_n cshim_pss < <(sum_rss_of "containerd-shim")
docker_stop=$(time_it sh -c "D() { /usr/bin/docker -H unix://$work/docker.sock \"\$@\"; }; D rm -f \$(D ps -aq) >/dev/null")

python3 - "$count" "$wharf_start" "$wharf_stop" "$docker_start" "$docker_stop" "$wharf_idle" "$wharf_running" \
    "$shim_total" "$shim_n" "$cshim_total" "$cshim_n" "$shim_pss" "$cshim_pss" <<'PY'
import sys
n = int(sys.argv[1])
ws, wt, ds, dt = map(float, sys.argv[2:6])
idle, running, shim_total, shim_n, cshim_total, cshim_n, shim_pss, cshim_pss = map(int, sys.argv[6:14])
print(f"{n} containers, started 10 at a time, then removed with one rm -f")
print(f"  start:  wharf {ws:6.2f} s, docker {ds:6.2f} s, docker/wharf = {ds / ws:.2f}x")
print(f"  remove: wharf {wt:6.2f} s, docker {dt:6.2f} s, docker/wharf = {dt / wt:.2f}x")
print(f"  wharf daemon RSS: idle {idle / 1024:.1f} MiB, with {n} running {running / 1024:.1f} MiB  (goal: under 30 MiB)")
if shim_n:
    print(f"  per container: wharf shim {shim_total / shim_n / 1024:.2f} MiB RSS, {shim_pss / shim_n / 1024:.2f} MiB PSS"
          f" (goal: under 2 MiB RSS)")
if cshim_n:
    print(f"  per container: containerd-shim {cshim_total / cshim_n / 1024:.2f} MiB RSS, "
          f"{cshim_pss / cshim_n / 1024:.2f} MiB PSS ({cshim_n} processes)")
PY
