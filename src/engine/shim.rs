//! `wharf __shim`: the small single-threaded process that supervises one container.
//!
//! The daemon spawns it (never forking itself); the shim starts a new session, becomes a child
//! subreaper, creates and starts the container with the runtime (so the container's init is
//! its child), and reports on its stdout, in one JSON line, either `{"pid": N}` or
//! `{"error": "…"}` — an `execve` failure ("exec failed: …") included. Then it owns the
//! container's stdout and stderr: every line goes to `container.log` as docker's json-file
//! format (`{"log","stream","time"}`). When the container ends it writes `exit.json`
//! (`{"exit_code": N}`, 128+N for a death by signal N), deletes the runtime's state and exits.
//! Its files live in the container's directory, so it keeps working while the daemon restarts.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::runtime::container::{CreateOptions, Runtime};

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
        })
    }
}

pub const LOG_FILE: &str = "container.log";
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
    // The container inherits fds 0, 1 and 2: /dev/null and the two pipes.
    for (from, to) in [
        (null.as_raw_fd(), 0),
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
    let runtime = Runtime::new(&args.runtime_root);
    let created = runtime.create(
        &args.id,
        &CreateOptions {
            bundle: args.dir.clone(),
            ..CreateOptions::default()
        },
    );
    // From here on our own 1 and 2 must not hold the pipes open: point them at /dev/null.
    for to in [1, 2] {
        // SAFETY: as above.
        unsafe { libc::dup2(null.as_raw_fd(), to) };
    }
    let mut created = created.map_err(|e| e.to_string())?;
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

    // The rest (copying output, waiting) needs little of this binary: become a fresh image of
    // it that touches only that, so each container's supervisor holds little memory. The pid,
    // the child and the subreaper mark stay; the pipes are handed over by number.
    let message = exec_watcher(args, created.pid, &out_read, &err_read);
    tracing::debug!("could not re-exec the shim as a watcher ({message}); watching in place");
    let log = Log::open(&args.dir, args.log_max_size, args.log_max_files)
        .map_err(|e| format!("open the log: {e}"))?;
    copy_output(out_read, err_read, log);
    let code = wait_for(created.pid);
    write_exit(&args.dir, code);
    let _ = runtime.delete(&args.id, true);
    Ok(())
}

/// `execv`s `/proc/self/exe __shim-watch …`; returns only why it could not.
fn exec_watcher(args: &ShimArgs, pid: i32, out: &OwnedFd, err: &OwnedFd) -> String {
    use std::ffi::CString;
    let text = |s: &str| CString::new(s).unwrap_or_default();
    let argv: Vec<CString> = [
        "wharf".to_owned(),
        "__shim-watch".to_owned(),
        "--id".to_owned(),
        args.id.clone(),
        "--dir".to_owned(),
        args.dir.to_string_lossy().into_owned(),
        "--runtime-root".to_owned(),
        args.runtime_root.to_string_lossy().into_owned(),
        "--log-max-size".to_owned(),
        args.log_max_size.to_string(),
        "--log-max-files".to_owned(),
        args.log_max_files.to_string(),
        "--pid".to_owned(),
        pid.to_string(),
        "--out-fd".to_owned(),
        out.as_raw_fd().to_string(),
        "--err-fd".to_owned(),
        err.as_raw_fd().to_string(),
    ]
    .iter()
    .map(|a| text(a))
    .collect();
    match nix::unistd::execv(&text("/proc/self/exe"), &argv) {
        Ok(never) => match never {},
        Err(e) => e.to_string(),
    }
}

/// `wharf __shim-watch`: the second half of a shim, after it re-executed itself: copies the
/// container's output into its log, waits for it, records the exit and deletes the runtime's
/// state. Returns the process exit code.
pub fn watch(raw: &[String]) -> i32 {
    let Ok(args) = ShimArgs::parse(raw) else {
        return 2;
    };
    let number = |flag: &str| -> Option<i32> {
        raw.iter()
            .position(|a| a == flag)
            .and_then(|i| raw.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let (Some(pid), Some(out), Some(err)) =
        (number("--pid"), number("--out-fd"), number("--err-fd"))
    else {
        return 2;
    };
    // SAFETY: the shim handed these descriptors over by number; nothing else owns them here.
    let (out, err) = unsafe {
        (
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(out),
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(err),
        )
    };
    match Log::open(&args.dir, args.log_max_size, args.log_max_files) {
        Ok(log) => copy_output(out, err, log),
        Err(_) => {
            drop(out);
            drop(err);
        }
    }
    let code = wait_for(pid);
    write_exit(&args.dir, code);
    let _ = Runtime::new(&args.runtime_root).delete(&args.id, true);
    0
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
struct Log {
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

    fn write_line(&mut self, line: &[u8]) {
        if self.max_size > 0 && self.size > 0 && self.size + line.len() as u64 > self.max_size {
            let _ = self.rotate();
        }
        if self.file.write_all(line).is_ok() {
            self.size += line.len() as u64;
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Copies both pipes into the log as json-file lines until both reach end of file.
fn copy_output(out: OwnedFd, err: OwnedFd, log: Log) {
    let mut log = log;
    let mut streams = [
        (File::from(out), "stdout", Vec::new(), true),
        (File::from(err), "stderr", Vec::new(), true),
    ];
    let mut buf = vec![0u8; 64 << 10];
    while streams.iter().any(|s| s.3) {
        let mut fds: Vec<nix::poll::PollFd> = streams
            .iter()
            .filter(|s| s.3)
            .map(|s| {
                nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&s.0), nix::poll::PollFlags::POLLIN)
            })
            .collect();
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE).is_err() {
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut open_index = 0;
        for stream in streams.iter_mut() {
            if !stream.3 {
                continue;
            }
            let is_ready = ready[open_index];
            open_index += 1;
            if !is_ready {
                continue;
            }
            match stream.0.read(&mut buf) {
                Ok(0) | Err(_) => {
                    stream.3 = false;
                    if !stream.2.is_empty() {
                        let rest = std::mem::take(&mut stream.2);
                        write_line(&mut log, stream.1, &rest);
                    }
                }
                Ok(n) => {
                    stream.2.extend_from_slice(&buf[..n]);
                    while let Some(end) = stream.2.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = stream.2.drain(..=end).collect();
                        write_line(&mut log, stream.1, &line);
                    }
                    // docker splits lines longer than 16 KiB.
                    while stream.2.len() >= 16 << 10 {
                        let part: Vec<u8> = stream.2.drain(..16 << 10).collect();
                        write_line(&mut log, stream.1, &part);
                    }
                }
            }
        }
        let _ = log.flush();
    }
    let _ = log.flush();
}

fn write_line(log: &mut Log, stream: &str, bytes: &[u8]) {
    let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let line = serde_json::json!({
        "log": String::from_utf8_lossy(bytes),
        "stream": stream,
        "time": time,
    });
    log.write_line(format!("{line}\n").as_bytes());
}
