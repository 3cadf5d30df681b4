//! The build context on the daemon: source paths of `COPY`/`ADD` resolved inside it (never out
//! of it: not by `..`, not by an absolute path, not through a symbolic link), wildcards
//! matched, and the content of what is copied hashed for the build cache.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::domain::DigestAlgorithm;
use crate::images::store::Hasher;

/// Resolves `source` (as written in the Dockerfile) to a path relative to `context` with no
/// symbolic link in it. Links inside the context are followed (the last one too) as long as
/// they stay inside; anything that would leave the context is an error naming the reason.
pub fn resolve(context: &Path, source: &str) -> Result<PathBuf, String> {
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
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    // Each name still to walk, with the link it came from (if any).
    type Via = Option<(PathBuf, PathBuf)>;
    let mut pending: std::collections::VecDeque<(std::ffi::OsString, Via)> = Path::new(source)
        .components()
        .map(|c| (c.as_os_str().to_owned(), None))
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
        let here: PathBuf = resolved.iter().chain([&name]).collect();
        let full = context.join(&here);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(format!("{source}: too many levels of symbolic links"));
                }
                let target = std::fs::read_link(&full).map_err(|e| format!("{source}: {e}"))?;
                if target.is_absolute() {
                    return Err(outside(&here, &target));
                }
                for c in target.components().rev() {
                    pending.push_front((
                        c.as_os_str().to_owned(),
                        Some((here.clone(), target.clone())),
                    ));
                }
            }
            Ok(_) => resolved.push(name),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "{source}: no such file or directory in the build context"
                ));
            }
            Err(e) => return Err(format!("{source}: {e}")),
        }
    }
    Ok(resolved.iter().collect())
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

/// The paths of the context (relative) that `pattern` matches, sorted; components with a
/// wildcard match names in their directory, the others are taken as they are.
pub fn glob(context: &Path, pattern: &str) -> Result<Vec<String>, String> {
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
            if !has_wildcard(part) {
                next.push(join(base, part));
                continue;
            }
            let dir = context.join(base);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| matches(part, n))
                .collect();
            names.sort();
            next.extend(names.iter().map(|n| join(base, n)));
        }
        found = next;
    }
    found.retain(|p| !p.is_empty() || pattern.trim_matches(['/', '.']).is_empty());
    Ok(found)
}

fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{base}/{name}")
    }
}

/// A digest of what `path` (relative to `context`, no links in it) holds: names, types,
/// modes, link targets and file contents, all the way down. Owners are left out: a copy
/// makes them root's or `--chown`'s.
pub fn content_digest(context: &Path, path: &Path) -> Result<String, String> {
    let mut hasher = Hasher::new(DigestAlgorithm::Sha256);
    hash_tree(&context.join(path), Path::new(""), &mut hasher)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(hasher.finish().to_string())
}

fn hash_tree(full: &Path, rel: &Path, h: &mut Hasher) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(full)?;
    let kind = if meta.is_dir() {
        'd'
    } else if meta.file_type().is_symlink() {
        'l'
    } else if meta.is_file() {
        'f'
    } else {
        'o'
    };
    h.update(format!("{}\0{kind}\0{:o}\0", rel.display(), meta.mode() & 0o7777).as_bytes());
    match kind {
        'f' => {
            h.update(format!("{}\0", meta.len()).as_bytes());
            let mut file = std::fs::File::open(full)?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        'l' => h.update(std::fs::read_link(full)?.as_os_str().as_encoded_bytes()),
        'd' => {
            let mut names: Vec<_> = std::fs::read_dir(full)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()?;
            names.sort();
            for name in names {
                hash_tree(&full.join(&name), &rel.join(&name), h)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("src/sub")).unwrap();
        std::fs::write(p.join("src/a.txt"), "a").unwrap();
        std::fs::write(p.join("src/b.txt"), "b").unwrap();
        std::fs::write(p.join("src/sub/c.md"), "c").unwrap();
        std::os::unix::fs::symlink("src", p.join("inside")).unwrap();
        std::os::unix::fs::symlink("/etc", p.join("abs")).unwrap();
        std::os::unix::fs::symlink("../..", p.join("src/up")).unwrap();
        dir
    }

    #[test]
    fn sources_resolve_inside_the_context_or_not_at_all() {
        let dir = context();
        let p = dir.path();
        assert_eq!(resolve(p, "src/a.txt").unwrap(), Path::new("src/a.txt"));
        assert_eq!(
            resolve(p, "./src/sub/../a.txt").unwrap(),
            Path::new("src/a.txt")
        );
        assert_eq!(resolve(p, "inside/b.txt").unwrap(), Path::new("src/b.txt"));
        assert_eq!(resolve(p, "inside").unwrap(), Path::new("src"));
        let err = resolve(p, "../x").unwrap_err();
        assert!(err.contains("leaves the build context"), "{err}");
        let err = resolve(p, "/etc/passwd").unwrap_err();
        assert!(err.contains("not an absolute path"), "{err}");
        let err = resolve(p, "abs/passwd").unwrap_err();
        assert!(err.contains("abs is a symbolic link to /etc"), "{err}");
        let err = resolve(p, "src/up/etc").unwrap_err();
        assert!(err.contains("outside the build context"), "{err}");
        let err = resolve(p, "nope.txt").unwrap_err();
        assert!(err.contains("no such file"), "{err}");
    }

    #[test]
    fn wildcards_match_names_in_their_directory() {
        let dir = context();
        let p = dir.path();
        assert_eq!(glob(p, "src/*.txt").unwrap(), ["src/a.txt", "src/b.txt"]);
        assert_eq!(glob(p, "src/[a]?txt").unwrap(), ["src/a.txt"]);
        assert_eq!(glob(p, "src/[!a].txt").unwrap(), ["src/b.txt"]);
        // Through the link "inside" too: resolving each match is what keeps to the context.
        assert_eq!(
            glob(p, "*/sub/*.md").unwrap(),
            ["inside/sub/c.md", "src/sub/c.md"]
        );
        assert!(glob(p, "src/*.rs").unwrap().is_empty());
        assert!(matches("a\\*", "a*") && !matches("a\\*", "ab"));
        assert!(glob(p, "../*").is_err());
    }

    #[test]
    fn the_content_digest_changes_with_content_and_mode_only() {
        let dir = context();
        let p = dir.path();
        let before = content_digest(p, Path::new("src")).unwrap();
        assert_eq!(before, content_digest(p, Path::new("src")).unwrap());
        std::fs::write(p.join("src/sub/c.md"), "C").unwrap();
        let changed = content_digest(p, Path::new("src")).unwrap();
        assert_ne!(before, changed);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p.join("src/a.txt"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        assert_ne!(changed, content_digest(p, Path::new("src")).unwrap());
    }
}
