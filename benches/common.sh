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
