#!/usr/bin/env bash
# Benchmark: the built-in registry against Debian's docker-registry (distribution 2.8) on this
# machine, with skopeo as the client: push and pull of an image with one 256 MiB random-data
# layer, alternated in one run, plus the disk floor (dd of the same bytes with conv=fsync).
# Every round pushes a fresh layer, so no registry (or skopeo's blob cache) has it already.
# Prints medians and ratios.
#
#   sudo benches/registry.sh [ROUNDS]      (default 5; needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}

. benches/common.sh
prepare docker-registry skopeo curl python3 pkg-config libseccomp-dev

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 1
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
peer=127.0.0.1:$(free_port)
ours=127.0.0.1:$(free_port)
cat > "$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/docker-registry
http:
  addr: $peer
YML
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
pids+=($!)
"$wharf" serve --data-root "$work/wharf" --socket "$work/wharf.sock" --listen none \
    --registry-listen "$ours" >"$work/wharf.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    [ -S "$work/wharf.sock" ] && curl -s "http://$peer/v2/" >/dev/null 2>&1 && break
    sleep 0.3
done
echo bench-password | "$wharf" -H "unix://$work/wharf.sock" user add bench --role admin --password-stdin >/dev/null

python3 - "$rounds" "$work" "$peer" "$ours" <<'PY'
import hashlib, io, json, os, statistics, subprocess, sys, tarfile, time
rounds, work, peer, ours = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
SIZE = 256 << 20

def layout(name):
    """An OCI layout with one uncompressed 256 MiB random-data layer; returns the layer path."""
    root = os.path.join(work, name)
    blobs = os.path.join(root, "blobs", "sha256")
    os.makedirs(blobs)
    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return "sha256:" + digest, os.path.join(blobs, digest)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("data.bin"); info.size = SIZE
        tar.addfile(info, io.BytesIO(os.urandom(SIZE)))
    layer = raw.getvalue()
    layer_digest, layer_path = put(layer)
    config = json.dumps({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}, "config": {}}).encode()
    config_digest, _ = put(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}]}).encode()
    m, _ = put(manifest)
    open(os.path.join(root, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": m, "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]},
        open(os.path.join(root, "index.json"), "w"))
    return layer_path

def timed(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start

def skopeo(src, dest, creds):
    cmd = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false"]
    if creds and dest.startswith("docker://"):
        cmd += ["--dest-creds", creds]
    if creds and src.startswith("docker://"):
        cmd += ["--src-creds", creds]
    return timed(cmd + [src, dest])

peers = {"wharf": (ours, "bench:bench-password"), "docker-registry": (peer, None)}
push = {name: [] for name in peers}
pull = {name: [] for name in peers}
floor = []
for r in range(rounds):
    for name, (addr, creds) in peers.items():
        layer = layout(f"img-{r}-{name}")
        subprocess.run(["sync"], check=True)
        push[name].append(skopeo(f"oci:{work}/img-{r}-{name}:v1", f"docker://{addr}/bench/r{r}:v1", creds))
        time.sleep(1)
        out = os.path.join(work, f"out-{r}-{name}")
        pull[name].append(skopeo(f"docker://{addr}/bench/r{r}:v1", f"oci:{out}:v1", creds))
        floor.append(timed(["dd", f"if={layer}", f"of={work}/dd.out", "bs=4M", "conv=fsync"]))
        for path in [os.path.join(work, f"img-{r}-{name}"), out, f"{work}/dd.out"]:
            subprocess.run(["rm", "-rf", path], check=True)
        time.sleep(1)
med = lambda xs: statistics.median(xs)
w_push, d_push = med(push["wharf"]), med(push["docker-registry"])
w_pull, d_pull = med(pull["wharf"]), med(pull["docker-registry"])
dd = med(floor)
print(f"rounds: {rounds}, alternated; skopeo copy of one 256 MiB random-data layer; medians")
print(f"push: wharf {w_push:5.2f} s, docker-registry {d_push:5.2f} s, docker-registry/wharf = {d_push / w_push:.2f}x  (goal: at least 1.5x)")
print(f"pull: wharf {w_pull:5.2f} s, docker-registry {d_pull:5.2f} s, docker-registry/wharf = {d_pull / w_pull:.2f}x  (goal: at least 1.5x)")
print(f"disk floor (dd conv=fsync): {dd:5.2f} s; wharf push / floor = {w_push / dd:.2f}x  (goal: at most 1.3x)")
PY
