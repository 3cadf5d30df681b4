//! The build context on the daemon. The context tar is spooled as it arrives (in memory up to
//! [`IN_MEMORY`], then to one file) and indexed (names, types, modes, link targets, and each file's SHA-256), so the Dockerfile is
//! read, `COPY`/`ADD` sources are resolved — never out of the context: not by `..`, not by an
//! absolute path, not through a symbolic link — wildcards matched and copied content hashed
//! for the build cache without a file of it on disk. Only a step the cache cannot give
//! unpacks the context into a directory (once per build), with the hardened extractor.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use sha2::Digest as _;

use crate::engine::archive::{self, Owners, Root};

/// What one name of the context is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    /// Where its bytes are in the spooled tar, and their SHA-256.
    File {
        offset: u64,
        size: u64,
        sha256: [u8; 32],
    },
    Link(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: Kind,
    mode: u32,
}

/// A context up to this size is kept in memory; a larger one goes to a file.
pub const IN_MEMORY: usize = 64 << 20;

/// Where the spooled tar is.
enum Spooled {
    Memory(Vec<u8>),
    File(PathBuf),
}

/// A build context: the spooled tar, its index, and the directory it unpacks into on demand.
pub struct Context {
    spool: Spooled,
    nodes: BTreeMap<String, Node>,
    dir: PathBuf,
    unpacked: OnceLock<Result<(), String>>,
}

/// A relative, normalized name of a tar entry; `..` and absolute names are refused.
fn entry_name(raw: &Path) -> Result<String, String> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "entry {} leaves the context: names must be relative, without '..'",
                    raw.display()
                ));
            }
        }
    }
    Ok(parts.join("/"))
}

/// Keeps a copy of what is read: in memory, then (past [`IN_MEMORY`]) in the file `path`.
struct Spool<R> {
    inner: R,
    memory: Vec<u8>,
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    in_memory: usize,
}

impl<R: Read> Read for Spool<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.file.is_none() && self.memory.len() + n > self.in_memory {
            use std::os::unix::fs::OpenOptionsExt;
            // Root's alone: a context may hold secrets the Dockerfile never copies.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&self.path)?;
            let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
            file.write_all(&self.memory)?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        match &mut self.file {
            Some(file) => file.write_all(&buf[..n])?,
            None => self.memory.extend_from_slice(&buf[..n]),
        }
        Ok(n)
    }
}

impl Context {
    /// Reads the context tar (plain, gzip or zstd) into `spool` and indexes it; `dir` is where
    /// it unpacks if a step needs its files.
    pub fn receive(tar: impl Read, spool: &Path, dir: &Path) -> Result<Context, String> {
        Self::receive_keeping(tar, spool, dir, IN_MEMORY)
    }

    /// [`Context::receive`], keeping up to `in_memory` bytes in memory.
    fn receive_keeping(
        tar: impl Read,
        spool: &Path,
        dir: &Path,
        in_memory: usize,
    ) -> Result<Context, String> {
        let plain = crate::images::unpack::decompressed(tar).map_err(|e| e.to_string())?;
        let mut reader = Spool {
            inner: plain,
            memory: Vec::new(),
            path: spool.to_owned(),
            file: None,
            in_memory,
        };
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        {
            let mut archive = tar::Archive::new(&mut reader);
            let mut buf = vec![0u8; 1 << 16];
            for entry in archive.entries().map_err(|e| format!("not a tar: {e}"))? {
                let mut entry = entry.map_err(|e| format!("not a readable tar: {e}"))?;
                let raw = entry.path().map_err(|e| e.to_string())?.into_owned();
                let name = entry_name(&raw)?;
                if name.is_empty() {
                    continue;
                }
                let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
                let kind = match entry.header().entry_type() {
                    tar::EntryType::Directory => Kind::Dir,
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        let offset = entry.raw_file_position();
                        let size = entry.size();
                        let mut h = sha2::Sha256::new();
                        loop {
                            let n = entry.read(&mut buf).map_err(|e| format!("{name}: {e}"))?;
                            if n == 0 {
                                break;
                            }
                            h.update(&buf[..n]);
                        }
                        Kind::File {
                            offset,
                            size,
                            sha256: h.finalize().into(),
                        }
                    }
                    tar::EntryType::Symlink => Kind::Link(
                        entry
                            .link_name()
                            .map_err(|e| e.to_string())?
                            .map(|l| l.into_owned())
                            .unwrap_or_default(),
                    ),
                    // A hard link is the file it names (which came before it).
                    tar::EntryType::Link => {
                        let target = entry
                            .link_name()
                            .map_err(|e| e.to_string())?
                            .map(|l| entry_name(&l))
                            .transpose()?
                            .unwrap_or_default();
                        match nodes.get(&target) {
                            Some(node) => node.kind.clone(),
                            None => {
                                return Err(format!(
                                    "{name}: a hard link to {target}, which is not in the context before it"
                                ));
                            }
                        }
                    }
                    _ => {
                        return Err(format!(
                            "{name}: a device, fifo or socket cannot be build input"
                        ));
                    }
                };
                // The index must say what unpacking makes: an entry under a link or a file,
                // or one that replaces another, would be written elsewhere or differently.
                let mut parent = Path::new(&name).parent();
                while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                    let key = p.to_string_lossy().into_owned();
                    match nodes.get(&key).map(|n| &n.kind) {
                        None => {
                            // Parents an archive did not list are directories.
                            nodes.insert(
                                key,
                                Node {
                                    kind: Kind::Dir,
                                    mode: 0o755,
                                },
                            );
                        }
                        Some(Kind::Dir) => {}
                        Some(_) => {
                            return Err(format!(
                                "{name}: its parent {key} is a link or a file in the context"
                            ));
                        }
                    }
                    parent = p.parent();
                }
                match nodes.get(&name).map(|n| &n.kind) {
                    None => {}
                    Some(Kind::Dir) if kind == Kind::Dir => {}
                    Some(_) => return Err(format!("{name} is in the context twice")),
                }
                nodes.insert(name, Node { kind, mode });
            }
        }
        // What follows the archive's end is read too, so the spool holds the whole tar.
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| e.to_string())?;
        let spool = match reader.file {
            Some(mut file) => {
                file.flush()
                    .map_err(|e| format!("{}: {e}", spool.display()))?;
                Spooled::File(spool.to_owned())
            }
            None => Spooled::Memory(reader.memory),
        };
        Ok(Context {
            spool,
            nodes,
            dir: dir.to_owned(),
            unpacked: OnceLock::new(),
        })
    }

    /// The bytes of a file of the context (no more than `limit`).
    pub fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>, String> {
        let name = path.to_string_lossy();
        match self.nodes.get(name.as_ref()).map(|n| &n.kind) {
            Some(Kind::File { offset, size, .. }) => {
                if *size > limit {
                    return Err(format!("{name} is larger than {limit} bytes"));
                }
                let (start, end) = (*offset as usize, (*offset + *size) as usize);
                match &self.spool {
                    Spooled::Memory(bytes) => bytes
                        .get(start..end)
                        .map(<[u8]>::to_vec)
                        .ok_or_else(|| format!("{name}: past the end of the context")),
                    Spooled::File(path) => {
                        let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
                        file.seek(std::io::SeekFrom::Start(*offset))
                            .map_err(|e| e.to_string())?;
                        let mut bytes = Vec::with_capacity(*size as usize);
                        file.take(*size)
                            .read_to_end(&mut bytes)
                            .map_err(|e| e.to_string())?;
                        Ok(bytes)
                    }
                }
            }
            Some(_) => Err(format!("{name} is not a file")),
            None => Err(format!("{name}: no such file in the build context")),
        }
    }

    /// Whether `path` (resolved, relative) is a directory.
    pub fn is_dir(&self, path: &Path) -> bool {
        path.as_os_str().is_empty()
            || matches!(
                self.nodes
                    .get(path.to_string_lossy().as_ref())
                    .map(|n| &n.kind),
                Some(Kind::Dir)
            )
    }

    /// The names directly in directory `dir` (relative, `""` for the top), sorted.
    fn children(&self, dir: &str) -> Vec<String> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| {
                let rest = &k[prefix.len()..];
                (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_owned())
            })
            .collect()
    }

    /// The spooled tar, from its start.
    fn open(&self) -> Result<Box<dyn Read + '_>, String> {
        Ok(match &self.spool {
            Spooled::Memory(bytes) => Box::new(&bytes[..]),
            Spooled::File(path) => Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?,
            )),
        })
    }

    /// The directory the context is unpacked in (unpacked at the first call).
    pub fn unpacked(&self) -> Result<&Path, String> {
        self.unpacked
            .get_or_init(|| {
                std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
                let root = Root::open(&self.dir).map_err(|e| e.to_string())?;
                // Owners are the copy's business (root's, or --chown's): none from the client
                // lands on the host, and no setuid file of the context is a host user's.
                archive::extract_tar(&root, Path::new("/"), self.open()?, Owners::Root)
                    .map(|_| ())
                    .map_err(|e| format!("unpack the build context: {e}"))
            })
            .clone()
            .map(|()| self.dir.as_path())
    }
}

/// Whether `text` has a wildcard (`*`, `?`, `[`).
pub fn has_wildcard(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// Shell-style matching of one name against one pattern component (`*`, `?`, `[a-z]`, `[!x]`,
/// `\` escaping the next character).
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|skip| match_from(&p[1..], &n[skip..])),
        Some('?') => !n.is_empty() && match_from(&p[1..], &n[1..]),
        Some('[') => {
            let Some(c) = n.first() else { return false };
            let Some(end) = p.iter().skip(2).position(|x| *x == ']').map(|i| i + 2) else {
                return *c == '[' && match_from(&p[1..], &n[1..]);
            };
            let class = &p[1..end];
            let (negated, class) = match class.first() {
                Some('!') | Some('^') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= *c && *c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == *c;
                    i += 1;
                }
            }
            hit != negated && match_from(&p[end + 1..], &n[1..])
        }
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && match_from(&p[2..], &n[1..]),
        Some(c) => n.first() == Some(c) && match_from(&p[1..], &n[1..]),
    }
}

/// The paths that `pattern` matches, sorted: components with a wildcard match the names
/// `list` gives for the directory so far, the others are taken as they are.
pub fn glob_with(pattern: &str, list: &dyn Fn(&str) -> Vec<String>) -> Result<Vec<String>, String> {
    if Path::new(pattern).is_absolute() {
        return Err(format!(
            "{pattern}: a source must be a path inside the build context, not an absolute path"
        ));
    }
    let mut found: Vec<String> = vec![String::new()];
    for part in pattern.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Err(format!("{pattern}: the path leaves the build context"));
        }
        let mut next = Vec::new();
        for base in &found {
            if has_wildcard(part) {
                let mut names: Vec<String> = list(base)
                    .into_iter()
                    .filter(|n| matches(part, n))
                    .collect();
                names.sort();
                next.extend(names.iter().map(|n| join(base, n)));
            } else {
                next.push(join(base, part));
            }
        }
        found = next;
    }
    found.retain(|p| !p.is_empty());
    Ok(found)
}

/// [`glob_with`] over the directory `root` (an image's files, for `COPY --from`); every
/// directory is opened inside the root, so an image's links cannot point the listing out.
pub fn glob_dir(root: &Path, pattern: &str) -> Result<Vec<String>, String> {
    let root = Root::open(root).map_err(|e| e.to_string())?;
    glob_with(pattern.trim_start_matches('/'), &|base| {
        root.open_at(Path::new(base), libc::O_RDONLY | libc::O_DIRECTORY)
            .and_then(|dir| std::fs::read_dir(crate::runtime::inroot::fd_path(&dir)))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    })
}

fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{base}/{name}")
    }
}

impl Context {
    /// Resolves `source` (as written in the Dockerfile) to a path relative to the context with
    /// no symbolic link in it. Links inside the context are followed (the last one too) as
    /// long as they stay inside; anything that would leave it is an error naming the reason.
    pub fn resolve(&self, source: &str) -> Result<PathBuf, String> {
        if Path::new(source).is_absolute() {
            return Err(format!(
                "{source}: a source must be a path inside the build context, not an absolute path"
            ));
        }
        let outside = |link: &Path, target: &Path| {
            format!(
                "{source}: {} is a symbolic link to {}, outside the build context",
                link.display(),
                target.display()
            )
        };
        let mut resolved: Vec<String> = Vec::new();
        // Each name still to walk, with the link it came from (if any).
        type Via = Option<(PathBuf, PathBuf)>;
        let mut pending: std::collections::VecDeque<(String, Via)> = Path::new(source)
            .components()
            .map(|c| (c.as_os_str().to_string_lossy().into_owned(), None))
            .collect();
        let mut links = 0;
        while let Some((name, via)) = pending.pop_front() {
            if name == "." || name.is_empty() {
                continue;
            }
            if name == ".." {
                if resolved.pop().is_none() {
                    return Err(match via {
                        Some((link, target)) => outside(&link, &target),
                        None => format!("{source}: the path leaves the build context"),
                    });
                }
                continue;
            }
            let here = join(&resolved.join("/"), &name);
            match self.nodes.get(&here).map(|n| &n.kind) {
                Some(Kind::Link(target)) => {
                    links += 1;
                    if links > 40 {
                        return Err(format!("{source}: too many levels of symbolic links"));
                    }
                    if target.is_absolute() {
                        return Err(outside(Path::new(&here), target));
                    }
                    for c in target.components().rev() {
                        pending.push_front((
                            c.as_os_str().to_string_lossy().into_owned(),
                            Some((PathBuf::from(&here), target.clone())),
                        ));
                    }
                }
                Some(_) => resolved.push(name),
                None => {
                    return Err(format!(
                        "{source}: no such file or directory in the build context"
                    ));
                }
            }
        }
        Ok(resolved.iter().collect())
    }

    /// The paths of the context (relative) that `pattern` matches, sorted; a wildcard looks
    /// in the directory its base resolves to (through links inside the context).
    pub fn glob(&self, pattern: &str) -> Result<Vec<String>, String> {
        glob_with(
            pattern,
            &|base| match self.resolve(if base.is_empty() { "." } else { base }) {
                Ok(dir) => self.children(&dir.to_string_lossy()),
                Err(_) => Vec::new(),
            },
        )
    }

    /// A digest of what `path` (resolved, relative) holds: names, types, modes, link targets
    /// and file contents, all the way down. Owners are left out: a copy makes them root's or
    /// `--chown`'s.
    pub fn content_digest(&self, path: &Path) -> String {
        let mut h = sha2::Sha256::new();
        let top = path.to_string_lossy().into_owned();
        let mut add = |rel: &str, node: &Node| {
            let kind = match &node.kind {
                Kind::Dir => "d".to_owned(),
                Kind::File { size, sha256, .. } => format!("f {size} {}", hex::encode(sha256)),
                Kind::Link(target) => format!("l {}", target.display()),
            };
            h.update(format!("{rel}\0{:o}\0{kind}\0", node.mode).as_bytes());
        };
        if top.is_empty() {
            for (name, node) in &self.nodes {
                add(name, node);
            }
        } else {
            if let Some(node) = self.nodes.get(&top) {
                add("", node);
            }
            let prefix = format!("{top}/");
            for (name, node) in self
                .nodes
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
            {
                add(&name[prefix.len()..], node);
            }
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A context like the client sends: a tar of a directory, links kept as links.
    fn context() -> (tempfile::TempDir, Context) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("src-dir");
        std::fs::create_dir_all(p.join("src/sub")).unwrap();
        std::fs::write(p.join("src/a.txt"), "a").unwrap();
        std::fs::write(p.join("src/b.txt"), "b").unwrap();
        std::fs::write(p.join("src/sub/c.md"), "c").unwrap();
        std::os::unix::fs::symlink("src", p.join("inside")).unwrap();
        std::os::unix::fs::symlink("/etc", p.join("abs")).unwrap();
        std::os::unix::fs::symlink("../..", p.join("src/up")).unwrap();
        let ctx = receive(dir.path(), &p);
        (dir, ctx)
    }

    fn receive(work: &Path, from: &Path) -> Context {
        let mut tar = tar::Builder::new(Vec::new());
        tar.follow_symlinks(false);
        tar.append_dir_all(".", from).unwrap();
        let bytes = tar.into_inner().unwrap();
        Context::receive(&bytes[..], &work.join("spool.tar"), &work.join("unpacked")).unwrap()
    }

    #[test]
    fn sources_resolve_inside_the_context_or_not_at_all() {
        let (_dir, ctx) = context();
        assert_eq!(ctx.resolve("src/a.txt").unwrap(), Path::new("src/a.txt"));
        assert_eq!(
            ctx.resolve("./src/sub/../a.txt").unwrap(),
            Path::new("src/a.txt")
        );
        assert_eq!(ctx.resolve("inside/b.txt").unwrap(), Path::new("src/b.txt"));
        assert_eq!(ctx.resolve("inside").unwrap(), Path::new("src"));
        let err = ctx.resolve("../x").unwrap_err();
        assert!(err.contains("leaves the build context"), "{err}");
        let err = ctx.resolve("/etc/passwd").unwrap_err();
        assert!(err.contains("not an absolute path"), "{err}");
        let err = ctx.resolve("abs/passwd").unwrap_err();
        assert!(err.contains("abs is a symbolic link to /etc"), "{err}");
        let err = ctx.resolve("src/up/etc").unwrap_err();
        assert!(err.contains("outside the build context"), "{err}");
        let err = ctx.resolve("nope.txt").unwrap_err();
        assert!(err.contains("no such file"), "{err}");
    }

    #[test]
    fn wildcards_match_names_in_their_directory() {
        let (_dir, ctx) = context();
        assert_eq!(ctx.glob("src/*.txt").unwrap(), ["src/a.txt", "src/b.txt"]);
        assert_eq!(ctx.glob("src/[a]?txt").unwrap(), ["src/a.txt"]);
        assert_eq!(ctx.glob("src/[!a].txt").unwrap(), ["src/b.txt"]);
        // Through the link "inside" too: resolving each match is what keeps to the context.
        assert_eq!(
            ctx.glob("*/sub/*.md").unwrap(),
            ["inside/sub/c.md", "src/sub/c.md"]
        );
        assert!(ctx.glob("src/*.rs").unwrap().is_empty());
        assert!(matches("a\\*", "a*") && !matches("a\\*", "ab"));
        assert!(ctx.glob("../*").is_err());
    }

    #[test]
    fn the_content_digest_changes_with_content_and_mode_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c");
        std::fs::create_dir_all(p.join("src/sub")).unwrap();
        std::fs::write(p.join("src/a.txt"), "a").unwrap();
        std::fs::write(p.join("src/sub/c.md"), "c").unwrap();
        let digest = || receive(dir.path(), &p).content_digest(Path::new("src"));
        let before = digest();
        assert_eq!(before, digest());
        std::fs::write(p.join("src/sub/c.md"), "C").unwrap();
        let changed = digest();
        assert_ne!(before, changed);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p.join("src/a.txt"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        assert_ne!(changed, digest());
    }

    #[test]
    fn files_are_read_from_the_spool_and_unpacked_on_demand() {
        let (dir, ctx) = context();
        assert_eq!(ctx.read(Path::new("src/b.txt"), 10).unwrap(), b"b");
        assert!(ctx.read(Path::new("src/b.txt"), 0).is_err());
        assert!(ctx.read(Path::new("src"), 10).is_err());
        assert!(
            !dir.path().join("unpacked").exists(),
            "nothing unpacked yet"
        );
        let unpacked = ctx.unpacked().unwrap();
        assert_eq!(std::fs::read(unpacked.join("src/sub/c.md")).unwrap(), b"c");
        assert_eq!(
            std::fs::read_link(unpacked.join("inside")).unwrap(),
            Path::new("src")
        );
    }

    #[test]
    fn a_context_too_big_for_memory_is_read_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::create_dir_all(&p).unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(p.join("big.bin"), &big).unwrap();
        std::fs::write(p.join("Dockerfile"), "FROM scratch\n").unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        tar.append_dir_all(".", &p).unwrap();
        let bytes = tar.into_inner().unwrap();
        let spool = dir.path().join("spool.tar");
        let ctx =
            Context::receive_keeping(&bytes[..], &spool, &dir.path().join("u"), 4096).unwrap();
        assert!(matches!(ctx.spool, Spooled::File(_)));
        assert_eq!(
            std::fs::read(&spool).unwrap(),
            bytes,
            "the whole tar is spooled"
        );
        assert_eq!(
            ctx.read(Path::new("Dockerfile"), 100).unwrap(),
            b"FROM scratch\n"
        );
        assert_eq!(ctx.read(Path::new("big.bin"), 1 << 20).unwrap(), big);
        let unpacked = ctx.unpacked().unwrap();
        assert_eq!(std::fs::read(unpacked.join("big.bin")).unwrap(), big);
    }

    #[test]
    fn entries_through_links_or_twice_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let receive = |entries: &[(&str, Option<&str>)]| {
            let mut tar = tar::Builder::new(Vec::new());
            for (name, link) in entries {
                let mut h = tar::Header::new_gnu();
                h.set_mode(0o644);
                match link {
                    Some(target) => {
                        h.set_entry_type(tar::EntryType::Symlink);
                        h.set_size(0);
                        tar.append_link(&mut h, name, target).unwrap();
                    }
                    None => {
                        h.set_size(1);
                        tar.append_data(&mut h, name, &b"x"[..]).unwrap();
                    }
                }
            }
            let bytes = tar.into_inner().unwrap();
            Context::receive(&bytes[..], &dir.path().join("s"), &dir.path().join("u"))
                .err()
                .unwrap_or_default()
        };
        let err = receive(&[("real/f", None), ("link", Some("real")), ("link/f", None)]);
        assert!(err.contains("its parent link is a link or a file"), "{err}");
        let err = receive(&[("a", None), ("a", None)]);
        assert!(err.contains("a is in the context twice"), "{err}");
        assert_eq!(receive(&[("a/b", None), ("c", Some("a"))]), "");
    }

    #[test]
    fn hostile_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..6].copy_from_slice(b"../etc");
        h.set_cksum();
        tar.append(&h, &b"x"[..]).unwrap();
        let bytes = tar.into_inner().unwrap();
        let err = Context::receive(&bytes[..], &dir.path().join("s"), &dir.path().join("u"))
            .err()
            .unwrap();
        assert!(err.contains("leaves the context"), "{err}");
    }
}
