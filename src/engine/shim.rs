//! `wharf __shim`: the small single-threaded process that supervises one container.
//!
//! The daemon spawns it (never forking itself), or hands a spare one its arguments (see
//! [`super::spawn`]); the shim starts a new session, becomes a child
//! subreaper, creates and starts the container with the runtime (so the container's init is
//! its child), and reports on its stdout, in one JSON line, either `{"pid": N}` or
//! `{"error": "…"}` — an `execve` failure ("exec failed: …") included. Then it owns the
//! container's stdout and stderr: every line goes to `container.log` as docker's json-file
//! format (`{"log","stream","time"}`). When the container ends it writes `exit.json`
//! (`{"exit_code": N}`, 128+N for a death by signal N), deletes the runtime's state, reports
//! the same `{"exit_code": N}` line on its stdout (when the daemon still listens) and exits.
//! Its files live in the container's directory, so it keeps working while the daemon restarts.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::runtime::container::{CreateOptions, Runtime};

pub mod attach;

/// What the daemon passes to a shim.
#[derive(Debug, Clone)]
pub struct ShimArgs {
    pub id: String,
    /// The container's directory: `config.json` + `rootfs/` (the bundle), logs, exit status.
    pub dir: PathBuf,
    /// The runtime's state root.
    pub runtime_root: PathBuf,
    /// Rotate `container.log` when it would pass this many bytes (0: never).
    pub log_max_size: u64,
    /// How many log files to keep, the current one included.
    pub log_max_files: u32,
    /// Give the container a terminal (`docker run -t`).
    pub tty: bool,
    /// Keep the container's stdin open for attached clients (`docker run -i`).
    pub stdin: bool,
    /// Keep the output until the first client attaches and hand it over then (a client that
    /// starts a container and attaches right after loses nothing).
    pub hold: bool,
}

impl ShimArgs {
    pub fn parse(args: &[String]) -> Result<ShimArgs, String> {
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
                .ok_or_else(|| format!("wharf __shim: missing {flag}"))
        };
        let number = |flag: &str| -> Result<u64, String> {
            value(flag)?
                .parse()
                .map_err(|_| format!("wharf __shim: {flag} takes a number"))
        };
        Ok(ShimArgs {
            id: value("--id")?,
            dir: PathBuf::from(value("--dir")?),
            runtime_root: PathBuf::from(value("--runtime-root")?),
            log_max_size: number("--log-max-size")?,
            log_max_files: number("--log-max-files")?.clamp(1, 100) as u32,
            tty: args.iter().any(|a| a == "--tty"),
            stdin: args.iter().any(|a| a == "--stdin"),
            hold: args.iter().any(|a| a == "--hold"),
        })
    }
}

/// A spare shim's arguments (see [`super::spawn`]): one JSON array of strings on stdin, read
/// once the daemon needs this shim. `None` at end of file or on a malformed line. Stdin is
/// /dev/null afterwards, as for a shim spawned with its arguments.
pub fn spare_args() -> Option<Vec<String>> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).ok()?;
    let args: Vec<String> = serde_json::from_str(&line).ok()?;
    let null = File::open("/dev/null").ok()?;
    // SAFETY: dup2 onto fd 0 of this single-threaded process; `null` stays valid meanwhile.
    unsafe { libc::dup2(null.as_raw_fd(), 0) };
    show_args(&args);
    Some(args)
}

/// Makes `/proc/<pid>/cmdline` (what `ps` shows) name the container, as for a shim spawned
/// with its arguments: they are written over the spare's own command line, which
/// [`super::spawn`] pads with [`SPARE_PADDING`] bytes for them (what does not fit is cut).
fn show_args(args: &[String]) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields 48 and 49 (arg_start, arg_end) count from the one after the command name, which
    // may hold spaces and ends at the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (Some(Ok(start)), Some(Ok(end))) = (
        fields.get(48 - 3).map(|f| f.parse::<usize>()),
        fields.get(49 - 3).map(|f| f.parse::<usize>()),
    ) else {
        return;
    };
    if start == 0 || end <= start {
        return;
    }
    let mut text = Vec::new();
    for arg in ["wharf", "__shim"]
        .into_iter()
        .chain(args.iter().map(String::as_str))
    {
        text.extend_from_slice(arg.as_bytes());
        text.push(0);
    }
    text.resize(end - start, 0);
    // The last byte stays a NUL, so the kernel shows exactly this range.
    text[end - start - 1] = 0;
    // SAFETY: [start, end) is this process's own command line, on the stack the kernel set up
    // at exec: mapped and writable for the life of the process. Nothing holds a Rust reference
    // into it (std keeps only the raw argv pointers and copies when asked), and this process
    // is single-threaded.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), start as *mut u8, text.len()) };
}

/// Bytes of command line a spare shim is spawned with, to be overwritten by its arguments.
pub const SPARE_PADDING: usize = 320;

pub const LOG_FILE: &str = "container.log";
/// The shim's attach socket in the container's directory (see [`attach`] for its frames).
pub const ATTACH_SOCKET: &str = "attach.sock";
const CONSOLE_SOCKET: &str = "console.sock";
pub const EXIT_FILE: &str = "exit.json";

/// Runs the shim; returns its process exit code.
pub fn run(args: &ShimArgs) -> i32 {
    // Our stdout is the daemon's report pipe: keep it aside before fd 1 becomes the container's
    // (close-on-exec: the watcher this process becomes does not hold it).
    let report =
        match nix::fcntl::fcntl(std::io::stdout(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)) {
            // SAFETY: a fresh descriptor from fcntl, owned by nobody else.
            Ok(fd) => unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) },
            Err(_) => return 1,
        };
    let mut report = std::io::BufWriter::new(report);
    let outcome = supervise(args, &mut report);
    if let Err(message) = outcome {
        let _ = writeln!(report, "{}", serde_json::json!({"error": message}));
        let _ = report.flush();
        return 1;
    }
    0
}

fn supervise(args: &ShimArgs, report: &mut impl Write) -> Result<(), String> {
    let _ = nix::unistd::setsid();
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let (out_read, out_write) = nix::unistd::pipe().map_err(|e| format!("make a pipe: {e}"))?;
    let (err_read, err_write) = nix::unistd::pipe().map_err(|e| format!("make a pipe: {e}"))?;
    let null = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    // Socket paths are limited to 107 bytes, which a data root and a container id can pass:
    // they are named through a descriptor of the directory.
    let dir = File::open(&args.dir).map_err(|e| format!("open {}: {e}", args.dir.display()))?;
    let attach_listener = listen(&short_path(&dir, ATTACH_SOCKET))?;
    let console_path = short_path(&dir, CONSOLE_SOCKET);
    let console = if args.tty {
        Some(listen(&console_path)?)
    } else {
        None
    };
    let (stdin_read, stdin_write) = if args.stdin && !args.tty {
        let (r, w) = nix::unistd::pipe().map_err(|e| format!("make a pipe: {e}"))?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let container_stdin = stdin_read
        .as_ref()
        .map_or(null.as_raw_fd(), |r| r.as_raw_fd());
    // The container inherits fds 0, 1 and 2: /dev/null (or the stdin pipe) and the two pipes.
    for (from, to) in [
        (container_stdin, 0),
        (out_write.as_raw_fd(), 1),
        (err_write.as_raw_fd(), 2),
    ] {
        // SAFETY: dup2 onto the standard descriptors of this single-threaded process.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(format!(
                "set up the container's stdio: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    drop(out_write);
    drop(err_write);
    drop(stdin_read);
    let runtime = Runtime::new(&args.runtime_root);
    let created = runtime.create(
        &args.id,
        &CreateOptions {
            bundle: args.dir.clone(),
            console_socket: console.as_ref().map(|_| console_path.clone()),
            ..CreateOptions::default()
        },
    );
    // From here on our own 0, 1 and 2 must not hold the pipes open: point them at /dev/null.
    for to in [0, 1, 2] {
        // SAFETY: as above.
        unsafe { libc::dup2(null.as_raw_fd(), to) };
    }
    let mut created = created.map_err(|e| e.to_string())?;
    let pty = match &console {
        Some(listener) => {
            let master = crate::runtime::console::receive_master(
                listener,
                std::time::Duration::from_secs(10),
            );
            let _ = std::fs::remove_file(&console_path);
            match master {
                Ok(m) => Some(m),
                Err(e) => {
                    let _ = runtime.delete(&args.id, true);
                    return Err(e);
                }
            }
        }
        None => None,
    };
    drop(console);
    if let Err(e) = runtime.start(&args.id) {
        let _ = runtime.delete(&args.id, true);
        return Err(e.to_string());
    }
    if let Err(message) = created.exec_result() {
        let _ = waitpid(Pid::from_raw(created.pid), None);
        let _ = runtime.delete(&args.id, true);
        return Err(message);
    }
    let _ = writeln!(report, "{}", serde_json::json!({"pid": created.pid}));
    let _ = report.flush();

    // The rest: copying output and waiting, which needs little of this binary and of what
    // starting the container allocated; the pump lets go of the rest when it goes quiet.
    let io = Io {
        out: out_read,
        err: err_read,
        pty,
        stdin: stdin_write,
        attach: OwnedFd::from(attach_listener),
    };
    let log = Log::open(&args.dir, args.log_max_size, args.log_max_files)
        .map_err(|e| format!("open the log: {e}"))?;
    attach::pump(io, log, args.hold, &mut shed_mapped_pages);
    let code = wait_for(created.pid);
    write_exit(&args.dir, code);
    let _ = runtime.delete(&args.id, true);
    // The daemon goes on from this line, without waiting for this process to be gone.
    let _ = writeln!(report, "{}", serde_json::json!({"exit_code": code}));
    let _ = report.flush();
    Ok(())
}

/// `name` in the directory open as `dir`, by a path short enough for a socket.
pub fn short_path(dir: &File, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// A fresh listening socket at `path` (a stale one goes first), for root only.
fn listen(path: &Path) -> Result<std::os::unix::net::UnixListener, String> {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| format!("listen on {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("restrict {}: {e}", path.display()))?;
    Ok(listener)
}

/// The descriptors the watcher serves: the container's output (pipes, and its terminal), the
/// write end of its stdin, and the attach socket.
pub struct Io {
    pub out: OwnedFd,
    pub err: OwnedFd,
    pub pty: Option<OwnedFd>,
    pub stdin: Option<OwnedFd>,
    pub attach: OwnedFd,
}

/// Lets go of memory the wait does not use, whenever the container's output goes quiet: the
/// shim lives as long as its container, and waiting runs a small part of the code that
/// starting it mapped (the kernel maps code in 64 KiB runs around each page touched, so even a
/// burst of log lines leaves far more mapped than the wait needs). The free heap goes back to
/// the kernel, and the mappings of the read-only parts of the binary and its libraries are
/// dropped (the pages stay in the page cache, shared with the daemon, and a touch maps them
/// again), so what stays resident is what the wait uses. A mapping the loader wrote into
/// (relocated constants hold anonymous pages) is left alone: dropping it would lose the writes.
fn shed_mapped_pages() {
    // SAFETY: malloc_trim only returns free heap memory; no allocation is touched.
    unsafe {
        libc::malloc_trim(0);
    }
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in never_written(&smaps) {
        // SAFETY: the range is a whole file-backed mapping of this process that was never
        // writable and holds no private page, in memory or in swap (see `never_written`), so
        // dropping its pages loses nothing: the next touch maps them again from the file, and
        // no reference into it is invalidated.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// The mappings of an smaps listing whose pages can be dropped without losing anything: backed
/// by a file, read-only, never writable (the kernel's `ac` flag marks a private mapping that was
/// writable at some time, as the loader's relocated constants were before it made them
/// read-only), and without a private page in memory (`Anonymous`) or in swap (`Swap`).
fn never_written(smaps: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    // The mapping being read, while it still qualifies.
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        if let Some((start, end)) = first.split_once('-') {
            // A mapping's first line: `start-end perms offset dev inode path`.
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            current = match (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                (Ok(s), Ok(e)) if !perms.contains('w') && path.starts_with('/') => Some((s, e)),
                _ => None,
            };
        } else if matches!(first, "Anonymous:" | "Swap:") && fields.next() != Some("0") {
            current = None;
        } else if first == "VmFlags:" {
            // The last line of a mapping's block.
            if let Some(range) = current.take()
                && !fields.any(|flag| flag == "ac" || flag == "wr")
            {
                found.push(range);
            }
        }
    }
    found
}

/// Waits for the container's init; reaps whatever else the subreaper inherits meanwhile.
fn wait_for(pid: i32) -> i32 {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => return code,
            Ok(WaitStatus::Signaled(p, signal, _)) if p.as_raw() == pid => {
                return 128 + signal as i32;
            }
            Ok(_) => {}
            Err(nix::Error::EINTR) => {}
            Err(_) => return 255,
        }
    }
}

fn write_exit(dir: &Path, code: i32) {
    let tmp = dir.join(format!("{EXIT_FILE}.tmp"));
    let body = serde_json::json!({"exit_code": code}).to_string();
    if std::fs::write(&tmp, body).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(EXIT_FILE));
    }
}

/// `container.log` with size-based rotation: when a line would take it past the limit it
/// becomes `container.log.1` (older ones shift up, the oldest beyond the count goes).
pub(super) struct Log {
    dir: PathBuf,
    file: std::io::BufWriter<File>,
    size: u64,
    max_size: u64,
    max_files: u32,
}

impl Log {
    fn open(dir: &Path, max_size: u64, max_files: u32) -> std::io::Result<Log> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG_FILE))?;
        let size = file.metadata()?.len();
        Ok(Log {
            dir: dir.to_owned(),
            file: std::io::BufWriter::new(file),
            size,
            max_size,
            max_files,
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let name = |n: u32| {
            if n == 0 {
                self.dir.join(LOG_FILE)
            } else {
                self.dir.join(format!("{LOG_FILE}.{n}"))
            }
        };
        if self.max_files <= 1 {
            std::fs::remove_file(name(0))?;
        } else {
            let _ = std::fs::remove_file(name(self.max_files - 1));
            for n in (0..self.max_files - 1).rev() {
                let _ = std::fs::rename(name(n), name(n + 1));
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(name(0))?;
        self.file = std::io::BufWriter::new(file);
        self.size = 0;
        Ok(())
    }

    pub(super) fn write_line(&mut self, line: &[u8]) {
        if self.max_size > 0 && self.size > 0 && self.size + line.len() as u64 > self.max_size {
            let _ = self.rotate();
        }
        if self.file.write_all(line).is_ok() {
            self.size += line.len() as u64;
        }
    }

    pub(super) fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

pub(super) fn write_line(log: &mut Log, stream: &str, bytes: &[u8]) {
    let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let line = serde_json::json!({
        "log": String::from_utf8_lossy(bytes),
        "stream": stream,
        "time": time,
    });
    log.write_line(format!("{line}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::never_written;

    /// A mapping's block as smaps shows it, reduced to the lines that matter.
    fn block(header: &str, anonymous: u32, swap: u32, flags: &str) -> String {
        format!(
            "{header}\nRss: 8 kB\nAnonymous: {anonymous} kB\nSwap: {swap} kB\nVmFlags: {flags}\n"
        )
    }

    #[test]
    fn only_never_written_file_mappings_are_dropped() {
        let smaps = [
            // Code: kept in the list (dropped).
            block(
                "1000-3000 r-xp 00000000 08:01 7 /usr/bin/wharf",
                0,
                0,
                "rd ex mr mw me",
            ),
            // Relocated constants, read-only now: written once, so never dropped, even with
            // their written pages swapped out and none in memory.
            block(
                "3000-4000 r--p 00002000 08:01 7 /usr/bin/wharf",
                4,
                0,
                "rd mr mw me ac",
            ),
            block(
                "4000-5000 r--p 00003000 08:01 7 /usr/bin/wharf",
                0,
                4,
                "rd mr mw me ac",
            ),
            block(
                "5000-6000 r--p 00004000 08:01 7 /usr/bin/wharf",
                0,
                0,
                "rd mr mw me ac",
            ),
            // A read-only mapping with a page in swap.
            block(
                "6000-7000 r--p 00000000 08:01 8 /usr/lib/libc.so.6",
                0,
                4,
                "rd mr mw me",
            ),
            // Writable data, the heap, anonymous memory.
            block(
                "7000-8000 rw-p 00005000 08:01 7 /usr/bin/wharf",
                4,
                0,
                "rd wr mr mw me ac",
            ),
            block(
                "8000-9000 rw-p 00000000 00:00 0 [heap]",
                4,
                0,
                "rd wr mr mw me ac",
            ),
            block("9000-a000 r--p 00000000 00:00 0", 0, 0, "rd mr mw me"),
            // Constants of a library, never written.
            block(
                "a000-b000 r--p 00000000 08:01 8 /usr/lib/libc.so.6",
                0,
                0,
                "rd mr mw me",
            ),
        ]
        .concat();
        assert_eq!(never_written(&smaps), [(0x1000, 0x3000), (0xa000, 0xb000)]);
    }
}
