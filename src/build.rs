//! Build script: link flags for the `wharf` executable, and the dashboard's browser libraries.
//!
//! `-z pack-relative-relocs` stores the binary's ~23 000 relative relocations as a compact
//! bitmap (DT_RELR, glibc 2.36 and binutils 2.38 onwards, so Debian 12) that the dynamic loader
//! applies several times faster. Every `wharf runtime` call pays the loader's work, once per
//! container start: measured 2.48 → 2.01 ms for a bare `wharf runtime state` on the 2-core
//! build machine (see benches/runtime-start.sh).
//!
//! The browser libraries (htmx, xterm.js and its fit addon, uPlot) are fetched with `npm ci` from the
//! committed `static/package.json` and `static/package-lock.json` into `OUT_DIR`, where
//! `src/web` embeds them in the binary (the lock file's hashes are checked; no package script
//! runs). Nothing fetched is committed. npm's own cache is tried first (`--prefer-offline`), so
//! a machine that built once builds again without the registry.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=src/build.rs");
    fetch_browser_libraries();
}

fn fetch_browser_libraries() {
    println!("cargo:rerun-if-changed=static/package.json");
    println!("cargo:rerun-if-changed=static/package-lock.json");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("npm");
    std::fs::create_dir_all(&out).expect("create OUT_DIR/npm");
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(format!("static/{file}"), out.join(file))
            .unwrap_or_else(|e| panic!("copy static/{file}: {e}"));
    }
    let status = Command::new("npm")
        .args([
            "ci",
            "--prefer-offline",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "`npm ci` for the dashboard's browser libraries failed ({s}); it needs the npm registry"
        ),
        Err(e) => panic!(
            "cannot run npm ({e}): building wharf fetches the dashboard's browser libraries \
             with it; install it (Debian: apt-get install npm)"
        ),
    }
}
