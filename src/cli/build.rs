//! `wharf build`: the context directory sent as a tar (less what `.dockerignore` leaves out,
//! links sent as links and never followed), the daemon's build log printed as it comes.

use std::path::{Path, PathBuf};

use http_body_util::StreamBody;
use hyper::body::{Bytes, Frame};

use super::client::{ApiClient, ClientError};
use crate::builder::context::matches;
use crate::domain::percent_encode;

/// What `wharf build` was given.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The context directory (what COPY and ADD can read)
    pub context: PathBuf,
    /// Names for the image, NAME[:TAG] (repeatable)
    #[arg(long = "tag", short = 't')]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile); it must be inside the context
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// KEY=VALUE for an ARG (repeatable; KEY alone takes the value from the environment)
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Run every step, without the cache
    #[arg(long)]
    pub no_cache: bool,
    /// Build up to this stage
    #[arg(long)]
    pub target: Option<String>,
    /// Print only the image's digest
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// One `.dockerignore` line: a pattern (components), and whether it is an exception (`!`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreRule {
    parts: Vec<String>,
    exception: bool,
}

/// The rules of a `.dockerignore` text, in order (comments and blank lines left out).
pub fn ignore_rules(text: &str) -> Vec<IgnoreRule> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (exception, pattern) = match l.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, l),
            };
            let parts: Vec<String> = pattern
                .split('/')
                .filter(|p| !p.is_empty() && *p != ".")
                .map(str::to_owned)
                .collect();
            (!parts.is_empty()).then_some(IgnoreRule { parts, exception })
        })
        .collect()
}

/// Whether `pattern` (components, `**` for any number of them) matches the start of `path`.
fn matches_prefix(pattern: &[String], path: &[&str]) -> bool {
    match pattern.first() {
        None => true, // the pattern named a parent directory of the path
        Some(p) if p == "**" => {
            (0..=path.len()).any(|skip| matches_prefix(&pattern[1..], &path[skip..]))
        }
        Some(p) => path
            .first()
            .is_some_and(|name| matches(p, name) && matches_prefix(&pattern[1..], &path[1..])),
    }
}

/// Whether `.dockerignore` leaves out `path` (relative, `/`-separated): the last rule that
/// matches it (or a directory above it) decides.
pub fn ignored(rules: &[IgnoreRule], path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut out = false;
    for rule in rules {
        if matches_prefix(&rule.parts, &parts) {
            out = !rule.exception;
        }
    }
    out
}

/// Whether some exception could bring back something under the ignored directory `path`.
fn exception_below(rules: &[IgnoreRule], path: &str) -> bool {
    let depth = path.split('/').filter(|p| !p.is_empty()).count();
    rules
        .iter()
        .any(|r| r.exception && (r.parts.len() > depth || r.parts.iter().any(|p| p == "**")))
}

/// Writes the context as a tar to `out`: every entry not ignored, sorted, links as links;
/// `keep` (the Dockerfile) is sent whatever `.dockerignore` says.
pub fn write_context(dir: &Path, keep: &str, out: impl std::io::Write) -> std::io::Result<u64> {
    let rules = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(text) => ignore_rules(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    let mut count = 0;
    let mut pending = vec![String::new()];
    while let Some(rel) = pending.pop() {
        let full = dir.join(&rel);
        let mut names: Vec<String> = std::fs::read_dir(&full)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let meta = std::fs::symlink_metadata(dir.join(&path))?;
            let skip = ignored(&rules, &path) && path != keep;
            if meta.is_dir() {
                if skip && !exception_below(&rules, &path) && !keep.starts_with(&format!("{path}/"))
                {
                    continue;
                }
                // An ignored directory that an exception looks into is sent empty, so
                // what the exception brings back has a parent.
                tar.append_path_with_name(dir.join(&path), &path)?;
                count += 1;
                subdirs.push(path);
            } else if !skip && (meta.is_file() || meta.file_type().is_symlink()) {
                tar.append_path_with_name(dir.join(&path), &path)?;
                count += 1;
            }
        }
        // Depth first, in name order.
        pending.extend(subdirs.into_iter().rev());
    }
    tar.into_inner()?.flush()?;
    Ok(count)
}

use std::io::Write as _;

/// `wharf build`.
pub(super) async fn build(client: ApiClient, args: BuildArgs) -> Result<(), ClientError> {
    let context = args.context.clone();
    if !context.is_dir() {
        return Err(ClientError::Input {
            reason: format!("the build context {} is not a directory", context.display()),
        });
    }
    let dockerfile = match &args.file {
        None => "Dockerfile".to_owned(),
        Some(f) => {
            let absolute = if f.is_absolute() {
                f.clone()
            } else {
                std::env::current_dir().unwrap_or_default().join(f)
            };
            let base = std::fs::canonicalize(&context).unwrap_or(context.clone());
            let file = std::fs::canonicalize(&absolute).map_err(|e| ClientError::Input {
                reason: format!("the Dockerfile {}: {e}", f.display()),
            })?;
            file.strip_prefix(&base)
                .map_err(|_| ClientError::Input {
                    reason: format!(
                        "the Dockerfile {} is not inside the build context {}",
                        f.display(),
                        context.display()
                    ),
                })?
                .to_string_lossy()
                .into_owned()
        }
    };
    let mut build_args = serde_json::Map::new();
    for arg in &args.build_args {
        let (k, v) = match arg.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            // `--build-arg NAME` takes the value from the environment, as docker does.
            None => match std::env::var(arg) {
                Ok(v) => (arg.clone(), v),
                Err(_) => continue,
            },
        };
        build_args.insert(k, v.into());
    }
    let mut path = format!(
        "/api/v1/build?dockerfile={}&buildargs={}",
        percent_encode(&dockerfile),
        percent_encode(&serde_json::Value::Object(build_args).to_string())
    );
    if !args.tags.is_empty() {
        path.push_str(&format!("&t={}", percent_encode(&args.tags.join(","))));
    }
    if args.no_cache {
        path.push_str("&nocache=true");
    }
    if let Some(t) = &args.target {
        path.push_str(&format!("&target={}", percent_encode(t)));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let keep = dockerfile.clone();
    let writer = tokio::task::spawn_blocking(move || {
        // Frames of 1 MiB: the tar's many small writes would each be a frame otherwise.
        let mut sink = std::io::BufWriter::with_capacity(1 << 20, ChannelWriter { tx: tx.clone() });
        let written = write_context(&context, &keep, &mut sink);
        if let Err(e) = &written {
            let _ = tx.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
        }
        written
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut failure = None;
    let mut digest = None;
    let quiet = args.quiet;
    let mut on_line = |line: &str| {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        if let Some(text) = event["stream"].as_str() {
            if !quiet {
                print!("{text}");
                let _ = std::io::stdout().flush();
            }
        } else if let Some(error) = event["error"].as_str() {
            failure = Some(error.to_owned());
        } else if event["status"] == "built" {
            digest = event["digest"].as_str().map(str::to_owned);
        }
    };
    let sent = client
        .upload_streaming(&path, "application/x-tar", body, &mut on_line)
        .await;
    let written = writer.await.map_err(|e| ClientError::Input {
        reason: format!("sending the context failed: {e}"),
    })?;
    if let Err(e) = written {
        return Err(ClientError::Input {
            reason: format!("reading the build context {}: {e}", args.context.display()),
        });
    }
    sent?;
    if let Some(reason) = failure {
        return Err(ClientError::Input {
            reason: format!("the build failed: {reason}"),
        });
    }
    match digest {
        Some(d) => {
            if quiet {
                println!("{d}");
            }
            Ok(())
        }
        None => Err(ClientError::Input {
            reason: "the daemon ended the build without a result".into(),
        }),
    }
}

/// A writer that sends what it is given as body frames.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Frame::data(Bytes::copy_from_slice(buf))))
            .map_err(|_| std::io::Error::other("the daemon stopped reading the context"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules_take_the_last_match_and_cover_directories() {
        let rules = ignore_rules("# comment\n\n*.log\nbuild/\n!build/keep.txt\n**/secret*\n/tmp\n");
        assert!(ignored(&rules, "app.log"));
        assert!(!ignored(&rules, "sub/app.log"), "*.log is for the top only");
        assert!(ignored(&rules, "build/out.o"));
        assert!(!ignored(&rules, "build/keep.txt"));
        assert!(ignored(&rules, "a/b/secret.key"));
        assert!(ignored(&rules, "secret"));
        assert!(ignored(&rules, "tmp/x"));
        assert!(!ignored(&rules, "src/main.rs"));
    }

    #[test]
    fn the_context_tar_leaves_out_ignored_files_and_keeps_links_as_links() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("src")).unwrap();
        std::fs::create_dir_all(p.join("build")).unwrap();
        std::fs::write(p.join("src/a.txt"), "a").unwrap();
        std::fs::write(p.join("build/out.o"), "o").unwrap();
        std::fs::write(p.join("build/keep.txt"), "k").unwrap();
        std::fs::write(p.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(
            p.join(".dockerignore"),
            "build\n!build/keep.txt\nDockerfile\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("link")).unwrap();
        let mut out = Vec::new();
        write_context(p, "Dockerfile", &mut out).unwrap();
        let mut names = Vec::new();
        for e in tar::Archive::new(&out[..]).entries().unwrap() {
            let e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if name == "link" {
                assert_eq!(e.header().entry_type(), tar::EntryType::Symlink);
                assert_eq!(e.link_name().unwrap().unwrap(), Path::new("/etc/passwd"));
            }
            names.push(name.trim_end_matches('/').to_owned());
        }
        names.sort();
        assert_eq!(
            names,
            [
                ".dockerignore",
                "Dockerfile",
                "build",
                "build/keep.txt",
                "link",
                "src",
                "src/a.txt"
            ]
        );
    }
}
