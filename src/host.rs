//! Facts about the host the daemon runs on: kernel, OS, CPUs, memory, cgroup hierarchy, overlayfs.
//!
//! Read-only probing of `/proc`, `/etc/os-release` and `uname`; it changes nothing on the host.

use std::path::Path;

use serde::Serialize;
use utoipa::ToSchema;

use crate::runtime::cgroups::{self, CgroupMode};

/// What `system/info` reports about the host.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct HostInfo {
    /// Kernel release, as `uname -r` prints it.
    pub kernel: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub operating_system: String,
    /// `amd64`, `arm64`, … (Go/OCI names).
    pub architecture: String,
    pub cpus: usize,
    pub memory_bytes: u64,
    pub cgroup: CgroupInfo,
    /// Whether the kernel offers the overlay file system (for container root filesystems).
    pub overlayfs: bool,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct CgroupInfo {
    /// 1 or 2: the hierarchy containers are managed with.
    pub version: u8,
    /// `unified`, `hybrid` or `legacy`; `unknown` when no hierarchy was found.
    pub mode: String,
    /// How cgroups are driven: wharf writes the cgroup file system itself.
    pub driver: String,
}

impl HostInfo {
    /// Probes the host once.
    pub fn probe() -> HostInfo {
        let uname = nix::sys::utsname::uname().ok();
        let kernel = uname
            .as_ref()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let cgroup = match CgroupMode::detect(Path::new(cgroups::DEFAULT_ROOT)) {
            Ok(mode) => CgroupInfo {
                version: mode.version(),
                mode: mode.to_string(),
                driver: "cgroupfs".to_owned(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "no cgroup hierarchy found");
                CgroupInfo {
                    version: 0,
                    mode: "unknown".to_owned(),
                    driver: "cgroupfs".to_owned(),
                }
            }
        };
        HostInfo {
            kernel,
            operating_system: os_pretty_name(),
            architecture: oci_architecture(std::env::consts::ARCH).to_owned(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: memory_total(),
            cgroup,
            overlayfs: overlay_supported(),
        }
    }
}

/// The OCI/Go name of a Rust target architecture.
pub fn oci_architecture(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Bytes in binary units with two decimals, as `docker info` prints memory.
/// Bytes and count of the regular files under `path` (links not followed; each hard link
/// counted).
pub fn tree_size(path: &std::path::Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut files = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                bytes += meta.len();
                files += 1;
            }
        }
    }
    (bytes, files)
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}

fn os_pretty_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "Linux".to_owned())
}

fn memory_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo_total(&text))
        .unwrap_or(0)
}

fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// overlay is listed in /proc/filesystems once the module is loaded (or built in); a module that
/// is present but not yet loaded shows under /sys/module only after its first use, so both count.
fn overlay_supported() -> bool {
    let listed = std::fs::read_to_string("/proc/filesystems")
        .map(|t| filesystems_list_overlay(&t))
        .unwrap_or(false);
    listed || Path::new("/sys/module/overlay").exists()
}

fn filesystems_list_overlay(text: &str) -> bool {
    text.lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(24_576_000 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn overlay_is_found_in_proc_filesystems_format() {
        assert!(filesystems_list_overlay(
            "nodev\tsysfs\n\text4\nnodev\toverlay\n"
        ));
        assert!(!filesystems_list_overlay(
            "nodev\tsysfs\n\text4\nnodev\toverlayx\n"
        ));
    }

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.50KiB");
        assert_eq!(human_bytes(24 * 1024 * 1024 * 1024), "24.00GiB");
    }

    #[test]
    fn architectures_use_oci_names() {
        assert_eq!(oci_architecture("x86_64"), "amd64");
        assert_eq!(oci_architecture("aarch64"), "arm64");
        assert_eq!(oci_architecture("riscv64"), "riscv64");
    }
}
