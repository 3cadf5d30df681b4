//! The one authorization function: a principal, an action and a target in, allowed or denied out.
//!
//! Every right in the appliance is decided here — the dashboard, the JSON API and the registry
//! all call [`authorize`] — so a role or a repository grant means the same thing everywhere.
//!
//! | action | viewer | operator | admin | robot |
//! |---|---|---|---|---|
//! | system, container and image reads; own tokens and password | yes | yes | yes | no |
//! | container start/stop/restart/kill/pause, logs, exec; image pull/push | no | yes | yes | no |
//! | container create/remove, image remove/build, users, all tokens, audit, settings | no | no | yes | no |
//! | registry pull | yes | yes | yes | by grant |
//! | registry push | by grant | yes | yes | by grant |
//! | registry delete | by grant | by grant | yes | by grant |
//!
//! The local unix socket is root's door (its file mode and group decide who reaches it), so a
//! socket caller may do everything, like docker's socket.

use std::fmt;

use crate::db::{AccountKind, RepositoryGrant};
use crate::domain::Role;

/// What a caller asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    SystemRead,
    ContainerRead,
    ContainerOperate,
    ContainerLogs,
    ContainerExec,
    ContainerCreate,
    ContainerRemove,
    ImageRead,
    ImagePull,
    ImagePush,
    ImageRemove,
    ImageBuild,
    RepositoryPull,
    RepositoryPush,
    RepositoryDelete,
    /// Create, list and remove users and robots, set roles and grants, reset passwords.
    UserManage,
    /// Change one's own password.
    PasswordChangeOwn,
    /// Create, list and revoke one's own API tokens.
    TokenManageOwn,
    /// List and revoke anyone's API tokens.
    TokenManageAny,
    AuditRead,
    SettingsWrite,
}

impl Action {
    /// The name used in the audit log.
    pub fn name(self) -> &'static str {
        match self {
            Action::SystemRead => "system.read",
            Action::ContainerRead => "container.read",
            Action::ContainerOperate => "container.operate",
            Action::ContainerLogs => "container.logs",
            Action::ContainerExec => "container.exec",
            Action::ContainerCreate => "container.create",
            Action::ContainerRemove => "container.remove",
            Action::ImageRead => "image.read",
            Action::ImagePull => "image.pull",
            Action::ImagePush => "image.push",
            Action::ImageRemove => "image.remove",
            Action::ImageBuild => "image.build",
            Action::RepositoryPull => "repository.pull",
            Action::RepositoryPush => "repository.push",
            Action::RepositoryDelete => "repository.delete",
            Action::UserManage => "user.manage",
            Action::PasswordChangeOwn => "user.password",
            Action::TokenManageOwn => "token.manage",
            Action::TokenManageAny => "token.manage-any",
            Action::AuditRead => "audit.read",
            Action::SettingsWrite => "settings.write",
        }
    }

    /// The least role that holds this right (registry actions can also come from grants).
    fn least_role(self) -> Role {
        match self {
            Action::SystemRead
            | Action::ContainerRead
            | Action::ImageRead
            | Action::RepositoryPull
            | Action::PasswordChangeOwn
            | Action::TokenManageOwn => Role::Viewer,
            Action::ContainerOperate
            | Action::ContainerLogs
            | Action::ContainerExec
            | Action::ImagePull
            | Action::ImagePush
            | Action::RepositoryPush => Role::Operator,
            Action::ContainerCreate
            | Action::ContainerRemove
            | Action::ImageRemove
            | Action::ImageBuild
            | Action::RepositoryDelete
            | Action::UserManage
            | Action::TokenManageAny
            | Action::AuditRead
            | Action::SettingsWrite => Role::Admin,
        }
    }
}

/// What an action is applied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    System,
    Container(String),
    Image(String),
    Repository(String),
    User(String),
    Token(i64),
    Audit,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::System => f.write_str("system"),
            Target::Container(id) => write!(f, "container:{id}"),
            Target::Image(r) => write!(f, "image:{r}"),
            Target::Repository(r) => write!(f, "repository:{r}"),
            Target::User(u) => write!(f, "user:{u}"),
            Target::Token(id) => write!(f, "token:{id}"),
            Target::Audit => f.write_str("audit"),
        }
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The local unix socket; the peer's uid from `SO_PEERCRED`.
    Socket { uid: u32 },
    /// A dashboard session cookie.
    Session,
    /// An API token (its id).
    Token { id: i64 },
    /// HTTP Basic credentials (the registry).
    Basic,
    /// No credentials.
    Anonymous,
}

impl Via {
    pub fn name(&self) -> &'static str {
        match self {
            Via::Socket { .. } => "socket",
            Via::Session => "session",
            Via::Token { .. } => "token",
            Via::Basic => "basic",
            Via::Anonymous => "anonymous",
        }
    }
}

/// An authenticated (or anonymous) caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The account's name, `local uid N` for the socket, `-` when anonymous.
    pub name: String,
    pub via: Via,
    /// Client address, or `socket`.
    pub source: String,
    pub user_id: Option<i64>,
    pub kind: Option<AccountKind>,
    /// The effective role: a token's role never exceeds its owner's current role.
    pub role: Option<Role>,
    pub grants: Vec<RepositoryGrant>,
}

impl Principal {
    pub fn anonymous(source: String) -> Principal {
        Principal {
            name: "-".to_owned(),
            via: Via::Anonymous,
            source,
            user_id: None,
            kind: None,
            role: None,
            grants: Vec::new(),
        }
    }

    pub fn local(uid: u32) -> Principal {
        Principal {
            name: format!("local uid {uid}"),
            via: Via::Socket { uid },
            source: "socket".to_owned(),
            user_id: None,
            kind: None,
            role: Some(Role::Admin),
            grants: Vec::new(),
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.via == Via::Anonymous
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{who} may not {action} on {target}")]
pub struct Denied {
    pub who: String,
    pub action: &'static str,
    pub target: String,
}

/// Decides whether `principal` may do `action` on `target`.
pub fn authorize(principal: &Principal, action: Action, target: &Target) -> Result<(), Denied> {
    if allowed(principal, action, target) {
        Ok(())
    } else {
        Err(Denied {
            who: principal.name.clone(),
            action: action.name(),
            target: target.to_string(),
        })
    }
}

fn allowed(p: &Principal, action: Action, target: &Target) -> bool {
    match p.via {
        Via::Anonymous => return false,
        Via::Socket { .. } => return true,
        _ => {}
    }
    if let Target::Repository(repository) = target {
        let granted = p.grants.iter().any(|g| {
            g.pattern.matches(repository)
                && match action {
                    Action::RepositoryPull => g.pull,
                    Action::RepositoryPush => g.push,
                    Action::RepositoryDelete => g.delete,
                    _ => false,
                }
        });
        if granted {
            return true;
        }
    }
    if p.kind == Some(AccountKind::Robot) {
        return false; // robots have their grants and nothing else
    }
    let Some(role) = p.role else { return false };
    if action == Action::PasswordChangeOwn {
        return matches!(target, Target::User(name) if *name == p.name) || role == Role::Admin;
    }
    role >= action.least_role()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RepoPattern;

    fn user(role: Role) -> Principal {
        Principal {
            name: format!("{role}-user"),
            via: Via::Session,
            source: "127.0.0.1".into(),
            user_id: Some(1),
            kind: Some(AccountKind::User),
            role: Some(role),
            grants: vec![],
        }
    }

    fn grant(pattern: &str, pull: bool, push: bool, delete: bool) -> RepositoryGrant {
        RepositoryGrant {
            pattern: RepoPattern::parse(pattern).unwrap(),
            pull,
            push,
            delete,
        }
    }

    fn robot(grants: Vec<RepositoryGrant>) -> Principal {
        Principal {
            name: "ci".into(),
            via: Via::Basic,
            kind: Some(AccountKind::Robot),
            role: None,
            grants,
            ..user(Role::Viewer)
        }
    }

    const ALL: [Action; 21] = [
        Action::SystemRead,
        Action::ContainerRead,
        Action::ContainerOperate,
        Action::ContainerLogs,
        Action::ContainerExec,
        Action::ContainerCreate,
        Action::ContainerRemove,
        Action::ImageRead,
        Action::ImagePull,
        Action::ImagePush,
        Action::ImageRemove,
        Action::ImageBuild,
        Action::RepositoryPull,
        Action::RepositoryPush,
        Action::RepositoryDelete,
        Action::UserManage,
        Action::PasswordChangeOwn,
        Action::TokenManageOwn,
        Action::TokenManageAny,
        Action::AuditRead,
        Action::SettingsWrite,
    ];

    fn target_for(action: Action) -> Target {
        match action.name().split('.').next().unwrap() {
            "container" => Target::Container("c1".into()),
            "image" => Target::Image("team/app:v1".into()),
            "repository" => Target::Repository("team/app".into()),
            "user" => Target::User("someone-else".into()),
            "token" => Target::Token(7),
            "audit" => Target::Audit,
            _ => Target::System,
        }
    }

    #[test]
    fn the_role_table_holds() {
        let viewer = [
            Action::SystemRead,
            Action::ContainerRead,
            Action::ImageRead,
            Action::RepositoryPull,
            Action::TokenManageOwn,
        ];
        let operator = [
            Action::ContainerOperate,
            Action::ContainerLogs,
            Action::ContainerExec,
            Action::ImagePull,
            Action::ImagePush,
            Action::RepositoryPush,
        ];
        for action in ALL {
            let target = target_for(action);
            let v = authorize(&user(Role::Viewer), action, &target).is_ok();
            let o = authorize(&user(Role::Operator), action, &target).is_ok();
            let a = authorize(&user(Role::Admin), action, &target).is_ok();
            assert!(a, "admin may {action:?}");
            assert_eq!(v, viewer.contains(&action), "viewer {action:?}");
            assert_eq!(
                o,
                viewer.contains(&action) || operator.contains(&action),
                "operator {action:?}"
            );
        }
    }

    #[test]
    fn own_password_only_unless_admin() {
        let v = user(Role::Viewer);
        assert!(authorize(&v, Action::PasswordChangeOwn, &Target::User(v.name.clone())).is_ok());
        assert!(authorize(&v, Action::PasswordChangeOwn, &Target::User("other".into())).is_err());
        assert!(
            authorize(
                &user(Role::Admin),
                Action::PasswordChangeOwn,
                &Target::User("other".into())
            )
            .is_ok()
        );
    }

    #[test]
    fn robots_have_their_grants_and_nothing_else() {
        let r = robot(vec![grant("a", true, false, false)]);
        assert!(authorize(&r, Action::RepositoryPull, &Target::Repository("a".into())).is_ok());
        assert!(authorize(&r, Action::RepositoryPull, &Target::Repository("b".into())).is_err());
        assert!(
            authorize(
                &r,
                Action::RepositoryPull,
                &Target::Repository("a/sub".into())
            )
            .is_err()
        );
        assert!(authorize(&r, Action::RepositoryPush, &Target::Repository("a".into())).is_err());
        for action in ALL {
            if !action.name().starts_with("repository.") {
                assert!(
                    authorize(&r, action, &target_for(action)).is_err(),
                    "robot {action:?}"
                );
            }
        }
        let r = robot(vec![
            grant("team/**", true, true, false),
            grant("team/secret", false, false, true),
        ]);
        assert!(
            authorize(
                &r,
                Action::RepositoryPush,
                &Target::Repository("team/x/y".into())
            )
            .is_ok()
        );
        assert!(
            authorize(
                &r,
                Action::RepositoryDelete,
                &Target::Repository("team/secret".into())
            )
            .is_ok()
        );
        assert!(
            authorize(
                &r,
                Action::RepositoryDelete,
                &Target::Repository("team/x".into())
            )
            .is_err()
        );
    }

    #[test]
    fn grants_add_to_a_users_role_for_the_registry() {
        let mut v = user(Role::Viewer);
        assert!(
            authorize(
                &v,
                Action::RepositoryPush,
                &Target::Repository("mine/app".into())
            )
            .is_err()
        );
        v.grants = vec![grant("mine/*", false, true, true)];
        assert!(
            authorize(
                &v,
                Action::RepositoryPush,
                &Target::Repository("mine/app".into())
            )
            .is_ok()
        );
        assert!(
            authorize(
                &v,
                Action::RepositoryDelete,
                &Target::Repository("mine/app".into())
            )
            .is_ok()
        );
        assert!(
            authorize(
                &v,
                Action::RepositoryPush,
                &Target::Repository("theirs/app".into())
            )
            .is_err()
        );
        // A grant never reaches beyond the registry.
        assert!(authorize(&v, Action::ImagePush, &Target::Image("mine/app".into())).is_err());
    }

    #[test]
    fn anonymous_gets_nothing_and_the_socket_gets_everything() {
        let anon = Principal::anonymous("10.0.0.1".into());
        let local = Principal::local(0);
        for action in ALL {
            let target = target_for(action);
            assert!(authorize(&anon, action, &target).is_err());
            assert!(authorize(&local, action, &target).is_ok());
        }
        let denied = authorize(&anon, Action::AuditRead, &Target::Audit).unwrap_err();
        assert_eq!(denied.to_string(), "- may not audit.read on audit");
    }
}
