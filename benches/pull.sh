#!/usr/bin/env bash
# Benchmark: pull + unpack from a local registry, wharf against docker, alternated in one run.
# Two images are made at run time and pushed with skopeo to Debian's docker-registry on
# 127.0.0.1: one with a single 256 MiB layer, one with 20 layers of 8 MiB. Each round removes
# the image from both daemons, then times `wharf pull` and `docker pull`. Prints medians and
# ratios.
#
#   sudo benches/pull.sh [ROUNDS]      (default 5; needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}

. benches/common.sh
prepare docker.io docker-registry skopeo python3 pkg-config libseccomp-dev

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 2
    grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
registry=127.0.0.1:$port
cat > "$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $registry
YML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
pids+=($!)

# Images as OCI layouts: random (incompressible) file contents, gzip layers.
python3 - "$work" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
work = sys.argv[1]
def layout(name, layer_sizes):
    root = os.path.join(work, name)
    blobs = os.path.join(root, "blobs", "sha256")
    os.makedirs(blobs)
    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        open(os.path.join(blobs, digest), "wb").write(data)
        return "sha256:" + digest
    layers, diff_ids = [], []
    for i, size in enumerate(layer_sizes):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            info = tarfile.TarInfo(f"data-{i}.bin"); info.size = size
            tar.addfile(info, io.BytesIO(os.urandom(size)))
        tar_bytes = raw.getvalue()
        diff_ids.append("sha256:" + hashlib.sha256(tar_bytes).hexdigest())
        gz = gzip.compress(tar_bytes, compresslevel=1)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(gz), "size": len(gz)})
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config), "size": len(config)},
        "layers": layers}).encode()
    m = put(manifest)
    open(os.path.join(root, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m,
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, open(os.path.join(root, "index.json"), "w"))
layout("big", [256 << 20])
layout("many", [8 << 20] * 20)
PY
for image in big many; do
    skopeo copy --quiet --dest-tls-verify=false "oci:$work/$image:v1" "docker://$registry/bench/$image:v1"
done

"$wharf" serve --data-root "$work/wharf" --socket "$work/wharf.sock" --listen none --registry-listen none >"$work/wharf.log" 2>&1 &
pids+=($!)
dockerd --data-root "$work/docker" --exec-root "$work/docker-exec" --pidfile "$work/docker.pid" \
    --host "unix://$work/docker.sock" --iptables=false --ip6tables=false --bridge=none >"$work/dockerd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    [ -S "$work/wharf.sock" ] && /usr/bin/docker -H "unix://$work/docker.sock" version >/dev/null 2>&1 && break
    sleep 0.3
done
W() { "$wharf" -H "unix://$work/wharf.sock" "$@"; }
D() { /usr/bin/docker -H "unix://$work/docker.sock" "$@"; }

python3 - "$rounds" "$registry" <<PY
import statistics, subprocess, sys, time
rounds, registry = int(sys.argv[1]), sys.argv[2]
wharf = ["$wharf", "-H", "unix://$work/wharf.sock"]
docker = ["/usr/bin/docker", "-H", "unix://$work/docker.sock"]
def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for image in ["big", "many"]:
    ref = f"{registry}/bench/{image}:v1"
    times = {"wharf": [], "docker": []}
    for _ in range(rounds):
        subprocess.run(wharf + ["rmi", ref], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(wharf + ["image", "prune"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(docker + ["rmi", ref], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, cmd in [("wharf", wharf + ["pull", "-q", ref]), ("docker", docker + ["pull", "-q", ref])]:
            start = time.perf_counter()
            run(cmd)
            times[name].append(time.perf_counter() - start)
    w, d = statistics.median(times["wharf"]), statistics.median(times["docker"])
    print(f"{image:5} ({'1 x 256 MiB' if image == 'big' else '20 x 8 MiB'}): wharf {w:6.2f} s, docker {d:6.2f} s, "
          f"docker/wharf = {d / w:.2f}x  (goal: at least 2x), {rounds} alternated rounds")
PY
