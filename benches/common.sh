# Sourced by the benchmark scripts: `prepare PACKAGE…` installs the Debian packages a
# benchmark needs when they are missing, builds wharf in release mode, and sets $wharf.
prepare() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    export PATH="$HOME/.cargo/bin:$PATH"
    cargo build --release --locked --quiet
    wharf=$PWD/target/release/wharf
}

W() { "$wharf" -H "unix://$work/wharf.sock" "$@"; }
D() { /usr/bin/docker -H "unix://$work/docker.sock" "$@"; }

# Starts `wharf serve` and a dockerd (both without a default bridge: containers get only
# loopback, and the host's network is left alone) in $work; their pids go to $wharf_pid,
# $docker_pid and the array $pids; returns when both answer.
start_wharf_and_dockerd() {
    "$wharf" serve --data-root "$work/wharf" --socket "$work/wharf.sock" --listen none \
        --registry-listen none --default-network none >"$work/wharf.log" 2>&1 &
    wharf_pid=$!
    pids+=("$wharf_pid")
    dockerd --data-root "$work/docker" --exec-root "$work/docker-exec" --pidfile "$work/docker.pid" \
        --host "unix://$work/docker.sock" --iptables=false --ip6tables=false --bridge=none \
        >"$work/dockerd.log" 2>&1 &
    docker_pid=$!
    pids+=("$docker_pid")
    for _ in $(seq 100); do
        [ -S "$work/wharf.sock" ] && D version >/dev/null 2>&1 && return 0
        sleep 0.3
    done
    echo "wharf or dockerd did not start; see $work/*.log" >&2
    return 1
}

# One busybox image, bench/busybox:latest, made from /bin/busybox and loaded into both.
load_busybox_in_both() {
    mkdir -p "$work/rootfs/bin"
    cp /bin/busybox "$work/rootfs/bin/"
    local applet
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$work/rootfs/bin/$applet"
    done
    tar -C "$work/rootfs" -c . | D import - bench/busybox:latest >/dev/null
    D save -o "$work/busybox.tar" bench/busybox:latest
    W load -q -i "$work/busybox.tar" >/dev/null
}

# A fresh $work directory (and the $pids array) that goes, with what ran there, when the
# script ends: containers of both daemons, the processes in $pids, mounts under $work.
start_work() {
    work=$(mktemp -d)
    pids=()
    trap stop_work EXIT
}

stop_work() {
    [ -S "$work/wharf.sock" ] && { W rm -f $(W ps -aq 2>/dev/null) >/dev/null 2>&1 || true; }
    [ -S "$work/docker.sock" ] && { D rm -f $(D ps -aq 2>/dev/null) >/dev/null 2>&1 || true; }
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 2
    grep " $work" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$work"
}
