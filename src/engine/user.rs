//! Who a container's process runs as: `--user` (or the image's USER) — `name`, `uid`,
//! `name:group`, `uid:gid` — resolved against the container's own `/etc/passwd` and
//! `/etc/group` as docker does, when the container starts (so users a container added count).
//! The files are read with every path resolved inside the container's root.

use std::io::Read;
use std::path::Path;

use super::EngineError;

/// The process's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: those of /etc/group that list the user (when no group is given).
    pub additional_gids: Vec<u32>,
    /// The user's home from /etc/passwd, `/` when it has no entry.
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || line.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || line.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

/// Checks the form of `user` (at create, before there is a root filesystem to look in).
pub fn check(user: &str) -> Result<(), EngineError> {
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let bad = |what: &str| {
        EngineError::Invalid(format!(
            "user {user:?}: the {what} is empty; give name|uid[:group|gid]"
        ))
    };
    if u.is_empty() && !user.is_empty() {
        return Err(bad("user"));
    }
    if user.contains(':') && g.is_empty() {
        return Err(bad("group"));
    }
    Ok(())
}

/// Resolves `user` with the container's `passwd` and `group` files (absent files read as
/// empty). Names must exist; numbers need not (docker's rule: gid 0 then).
pub fn resolve(user: &str, passwd: &str, group: &str) -> Result<Identity, EngineError> {
    check(user)?;
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let u = if u.is_empty() { "0" } else { u };
    let entry = match u.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|e| e.uid == uid),
        Err(_) => Some(passwd_entries(passwd).find(|e| e.name == u).ok_or_else(|| {
            EngineError::Invalid(format!(
                "unable to find user {u}: no matching entries in the container's /etc/passwd"
            ))
        })?),
    };
    let uid = entry
        .as_ref()
        .map_or_else(|| u.parse().unwrap_or(0), |e| e.uid);
    let home = entry.as_ref().map_or("/", |e| e.home).to_owned();
    let (gid, additional_gids) = if g.is_empty() {
        let gid = entry.as_ref().map_or(0, |e| e.gid);
        let mut extra: Vec<u32> = match &entry {
            Some(e) => group_entries(group)
                .filter(|grp| grp.members.contains(&e.name) && grp.gid != gid)
                .map(|grp| grp.gid)
                .collect(),
            None => Vec::new(),
        };
        extra.sort_unstable();
        extra.dedup();
        (gid, extra)
    } else {
        let gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|grp| grp.name == g)
                .map(|grp| grp.gid)
                .ok_or_else(|| {
                    EngineError::Invalid(format!(
                        "unable to find group {g}: no matching entries in the container's /etc/group"
                    ))
                })?,
        };
        (gid, Vec::new())
    };
    Ok(Identity {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// Reads `/etc/<name>` of the root filesystem at `rootfs` without following any link out of
/// it; a missing file reads as empty. At most 4 MiB is read.
pub fn read_etc(rootfs: &Path, name: &str) -> Result<String, EngineError> {
    let root = crate::runtime::inroot::Root::open(rootfs).map_err(|e| EngineError::Io {
        what: format!("open {}", rootfs.display()),
        reason: e.to_string(),
    })?;
    let path = Path::new("etc").join(name);
    // Non-blocking, and only a regular file is read: a container may have made it a FIFO
    // (which would hang the start) or a device node (which root must not open for it).
    match root.open_at(&path, libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK) {
        Ok(file) => {
            let regular = file.metadata().is_ok_and(|m| m.file_type().is_file());
            if !regular {
                return Err(EngineError::Invalid(format!(
                    "the container's /etc/{name} is not a regular file"
                )));
            }
            let mut text = String::new();
            file.take(4 << 20)
                .read_to_string(&mut text)
                .map_err(|e| EngineError::Invalid(format!("the container's /etc/{name}: {e}")))?;
            Ok(text)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(String::new()),
        Err(e) => Err(EngineError::Invalid(format!(
            "the container's /etc/{name}: {e}"
        ))),
    }
}

/// [`resolve`] against the files of the root filesystem at `rootfs`.
pub fn resolve_in(rootfs: &Path, user: &str) -> Result<Identity, EngineError> {
    resolve(
        user,
        &read_etc(rootfs, "passwd")?,
        &read_etc(rootfs, "group")?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          # a comment\n\
                          app:x:1000:1000:App:/home/app:/bin/sh\n\
                          broken:line\n\
                          www:x:33:33::/var/www:/bin/false\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nwheel:x:10:app,www\naudio:x:29:app\nweb:x:33:\n";

    fn id(user: &str) -> Result<Identity, EngineError> {
        resolve(user, PASSWD, GROUP)
    }

    #[test]
    fn names_and_numbers_resolve_as_docker_does() {
        let app = id("app").unwrap();
        assert_eq!(
            (app.uid, app.gid, app.home.as_str()),
            (1000, 1000, "/home/app")
        );
        assert_eq!(app.additional_gids, vec![10, 29]);
        assert_eq!(
            id("1000").unwrap(),
            app,
            "a uid with an entry takes the entry"
        );
        let www = id("www:audio").unwrap();
        assert_eq!((www.uid, www.gid), (33, 29));
        assert!(
            www.additional_gids.is_empty(),
            "a given group replaces the lists"
        );
        let unknown = id("4242").unwrap();
        assert_eq!(
            (unknown.uid, unknown.gid, unknown.home.as_str()),
            (4242, 0, "/")
        );
        assert_eq!(id("4242:7").unwrap().gid, 7);
        let root = id("").unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        // No files at all (a scratch image): numbers still work.
        assert_eq!(resolve("5:6", "", "").unwrap().uid, 5);
    }

    #[test]
    fn unknown_names_and_bad_forms_say_why() {
        let err = id("nobody").unwrap_err().to_string();
        assert!(err.contains("unable to find user nobody"), "{err}");
        let err = id("app:staff").unwrap_err().to_string();
        assert!(err.contains("unable to find group staff"), "{err}");
        assert!(check("app:").is_err() && check(":1").is_err());
        assert!(check("app:wheel").is_ok() && check("").is_ok());
    }

    #[test]
    fn files_are_read_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), "evil:x:7:7::/:/bin/sh\n").unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        // An absolute link resolves inside the root, where there is no such file.
        std::os::unix::fs::symlink(
            outside.path().join("passwd"),
            root.path().join("etc/passwd"),
        )
        .unwrap();
        assert_eq!(read_etc(root.path(), "passwd").unwrap(), "");
        assert!(resolve_in(root.path(), "evil").is_err());
        std::fs::write(root.path().join("etc/group"), "g:x:5:\n").unwrap();
        assert_eq!(read_etc(root.path(), "group").unwrap(), "g:x:5:\n");
        // A FIFO is refused at once rather than waited on.
        std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
        nix::unistd::mkfifo(
            &root.path().join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let err = read_etc(root.path(), "passwd").unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
