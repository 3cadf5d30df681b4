//! Build script: link flags for the `wharf` executable.
//!
//! `-z pack-relative-relocs` stores the binary's ~23 000 relative relocations as a compact
//! bitmap (DT_RELR, glibc 2.36 and binutils 2.38 onwards, so Debian 12) that the dynamic loader
//! applies several times faster. Every `wharf runtime` call pays the loader's work, once per
//! container start: measured 2.48 → 2.01 ms for a bare `wharf runtime state` on the 2-core
//! build machine (see benches/runtime-start.sh).

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=src/build.rs");
}
