//! OCI lifecycle hooks: programs run at fixed points with the container's state on stdin.
//!
//! | hook | when | where it runs | on failure |
//! |---|---|---|---|
//! | prestart, createRuntime | create, mounts made, before pivot_root | runtime namespaces | create fails |
//! | createContainer | right after them | container namespaces, host paths still visible | create fails |
//! | startContainer | start, before the program | container namespaces, after pivot_root | the program does not run |
//! | poststart | start, after the program began | runtime namespaces | warning |
//! | poststop | delete, after the container is gone | runtime namespaces | warning |

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

/// Whether the spec has hooks that the runtime runs between the child's mounts and its
/// `pivot_root` (prestart, createRuntime); without them the child does not stop there.
pub fn runtime_side(spec: &oci_spec::runtime::Spec) -> bool {
    spec.hooks().as_ref().is_some_and(|h| {
        h.prestart().as_ref().is_some_and(|v| !v.is_empty())
            || h.create_runtime().as_ref().is_some_and(|v| !v.is_empty())
    })
}

/// The OCI state document handed to hooks on stdin.
pub fn state_json(
    id: &str,
    status: &str,
    pid: i32,
    bundle: &std::path::Path,
    annotations: &std::collections::BTreeMap<String, String>,
) -> String {
    serde_json::json!({
        "ociVersion": "1.2.0",
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": annotations,
    })
    .to_string()
}

/// Runs each hook in turn; the first failure is the error, naming the hook and the cause.
pub fn run(kind: &str, hooks: Option<&Vec<Hook>>, state: &str) -> Result<(), String> {
    for hook in hooks.into_iter().flatten() {
        run_one(kind, hook, state)?;
    }
    Ok(())
}

fn run_one(kind: &str, hook: &Hook, state: &str) -> Result<(), String> {
    let path = hook.path();
    let name = format!("{kind} hook {}", path.display());
    let args = hook.args().clone().unwrap_or_default();
    let mut command = Command::new(path);
    if let Some((arg0, rest)) = args.split_first() {
        command.arg0(arg0).args(rest);
    }
    command.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            command.env(k, v);
        }
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{name}: {}", super::process::io_message(&e)))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(state.as_bytes());
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                let err = err.trim();
                return Err(match status.code() {
                    Some(code) => format!(
                        "{name} exited with {code}{}{err}",
                        if err.is_empty() { "" } else { ": " }
                    ),
                    None => format!("{name} was killed by a signal"),
                });
            }
            Ok(None) => {}
            Err(e) => return Err(format!("{name}: {e}")),
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{name} timed out after {} s",
                hook.timeout().unwrap_or(0)
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: serde_json::Value) -> Hook {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn hooks_get_the_state_and_failures_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("state.json");
        let ok = hook(
            serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", out.display())]}),
        );
        run("poststart", Some(&vec![ok]), "{\"id\":\"x\"}").unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"id\":\"x\"}");
        let bad = hook(
            serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 3"]}),
        );
        let err = run("createRuntime", Some(&vec![bad]), "{}").unwrap_err();
        assert_eq!(err, "createRuntime hook /bin/sh exited with 3: nope");
        let slow =
            hook(serde_json::json!({"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}));
        assert_eq!(
            run("poststop", Some(&vec![slow]), "{}").unwrap_err(),
            "poststop hook /bin/sleep timed out after 1 s"
        );
        let missing = hook(serde_json::json!({"path": "/nonexistent/hook"}));
        assert_eq!(
            run("prestart", Some(&vec![missing]), "{}").unwrap_err(),
            "prestart hook /nonexistent/hook: No such file or directory"
        );
    }
}
