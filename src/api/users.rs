//! `/api/v1/users`: users and robots, their passwords and their repository grants (admins).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::caller_audit;
use super::error::{ApiError, Body, ErrorBody};
use crate::auth::{Action, Caller, Target, password};
use crate::db::{AccountKind, RepositoryGrant, User};
use crate::domain::{RepoPattern, Role, UserName};
use crate::startup::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(remove))
        .routes(routes!(change_password))
        .routes(routes!(set_grants))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub name: String,
    pub kind: AccountKind,
    pub role: Option<Role>,
    pub created_at: i64,
    pub password_changed_at: i64,
    pub grants: Vec<GrantView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantView {
    /// A repository name or glob: `team/app`, `team/*` (one level), `team/**` (any depth).
    pub pattern: String,
    #[serde(default)]
    pub pull: bool,
    #[serde(default)]
    pub push: bool,
    #[serde(default)]
    pub delete: bool,
}

impl From<&RepositoryGrant> for GrantView {
    fn from(g: &RepositoryGrant) -> Self {
        GrantView {
            pattern: g.pattern.to_string(),
            pull: g.pull,
            push: g.push,
            delete: g.delete,
        }
    }
}

pub(crate) async fn view(state: &AppState, user: User) -> Result<UserView, ApiError> {
    let grants = state.db.grants_of(user.id).await?;
    Ok(UserView {
        name: user.name,
        kind: user.kind,
        role: user.role,
        created_at: user.created_at,
        password_changed_at: user.password_changed_at,
        grants: grants.iter().map(GrantView::from).collect(),
    })
}

async fn find(state: &AppState, name: &str) -> Result<User, ApiError> {
    state
        .db
        .user_by_name(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {name:?}")))
}

/// Every user and robot with its grants.
#[utoipa::path(get, path = "/users", tag = "users", responses((status = 200, body = Vec<UserView>), (status = 403, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<UserView>>, ApiError> {
    caller
        .require(Action::UserManage, &Target::User("*".into()))
        .await?;
    let mut out = Vec::new();
    for user in state.db.list_users().await? {
        out.push(view(&state, user).await?);
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUser {
    pub name: String,
    /// `user` (default) or `robot` (registry only, rights from grants).
    pub kind: Option<AccountKind>,
    /// Required for users, refused for robots.
    pub role: Option<Role>,
    pub password: String,
    #[serde(default)]
    pub grants: Vec<GrantView>,
}

fn parse_grants(grants: &[GrantView]) -> Result<Vec<RepositoryGrant>, ApiError> {
    grants
        .iter()
        .map(|g| {
            Ok(RepositoryGrant {
                pattern: RepoPattern::parse(&g.pattern)?,
                pull: g.pull,
                push: g.push,
                delete: g.delete,
            })
        })
        .collect()
}

impl GrantView {
    /// The rights it gives, by name: `pull`, `push`, `delete`.
    pub fn rights(&self) -> Vec<&'static str> {
        [
            (self.pull, "pull"),
            (self.push, "push"),
            (self.delete, "delete"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

fn describe_grants(grants: &[RepositoryGrant]) -> String {
    grants
        .iter()
        .map(|g| {
            let view = GrantView::from(g);
            format!("{}={}", view.pattern, view.rights().join("+"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Creates a user or a robot.
#[utoipa::path(post, path = "/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let name = UserName::parse(&req.name)?;
    caller
        .require(Action::UserManage, &Target::User(name.to_string()))
        .await?;
    let kind = req.kind.unwrap_or(AccountKind::User);
    let role = match (kind, req.role) {
        (AccountKind::User, Some(role)) => Some(role),
        (AccountKind::User, None) => {
            return Err(ApiError::BadRequest(
                "a user needs a role: admin, operator or viewer".into(),
            ));
        }
        (AccountKind::Robot, None) => None,
        (AccountKind::Robot, Some(_)) => {
            return Err(ApiError::BadRequest(
                "a robot has no role: give it repository grants".into(),
            ));
        }
    };
    password::check_acceptable(&req.password)?;
    let grants = parse_grants(&req.grants)?;
    let hash = password::hash(req.password).await?;
    let detail = format!(
        "kind={} role={}",
        kind.as_str(),
        role.map_or("-".to_owned(), |r| r.to_string())
    );
    let record = caller_audit(&caller, "user.create", &format!("user:{name}"), &detail);
    let user = state
        .db
        .create_user(name.as_str(), kind, role, &hash, &record)
        .await?;
    if !grants.is_empty() {
        let record = caller_audit(
            &caller,
            "user.grants",
            &format!("user:{name}"),
            &describe_grants(&grants),
        );
        state.db.set_grants(user.id, &grants, &record).await?;
    }
    Ok((StatusCode::CREATED, Json(view(&state, user).await?)))
}

/// Removes a user or robot with its sessions, tokens and grants. The last admin cannot be removed.
#[utoipa::path(delete, path = "/users/{name}", tag = "users",
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller
        .require(Action::UserManage, &Target::User(name.clone()))
        .await?;
    let user = find(&state, &name).await?;
    if user.role == Some(Role::Admin) {
        let admins = state
            .db
            .list_users()
            .await?
            .iter()
            .filter(|u| u.role == Some(Role::Admin))
            .count();
        if admins <= 1 {
            return Err(ApiError::Conflict(format!(
                "user {name:?} is the last admin and cannot be removed"
            )));
        }
    }
    let record = caller_audit(&caller, "user.delete", &format!("user:{name}"), "");
    state.db.delete_user(&name, &record).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangePassword {
    pub password: String,
    /// Required when changing one's own password over the network.
    pub current_password: Option<String>,
}

/// Sets a new password and ends every session of the user.
#[utoipa::path(put, path = "/users/{name}/password", tag = "users", request_body = ChangePassword,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<ChangePassword>,
) -> Result<StatusCode, ApiError> {
    caller
        .require(Action::PasswordChangeOwn, &Target::User(name.clone()))
        .await?;
    let user = find(&state, &name).await?;
    password::check_acceptable(&req.password)?;
    let own = caller.principal.user_id == Some(user.id);
    if own {
        let current = req.current_password.as_deref().unwrap_or("");
        state
            .auth
            .check_password(
                &state.db,
                &name,
                current,
                &caller.principal.source,
                caller.principal.via.name(),
            )
            .await?;
    }
    let hash = password::hash(req.password).await?;
    let record = caller_audit(
        &caller,
        "user.password",
        &format!("user:{name}"),
        "sessions revoked",
    );
    state.db.set_password(user.id, &hash, &record).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SetGrants {
    pub grants: Vec<GrantView>,
}

/// Replaces the repository grants of a user or robot.
#[utoipa::path(put, path = "/users/{name}/grants", tag = "users", request_body = SetGrants,
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_grants(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<SetGrants>,
) -> Result<Json<UserView>, ApiError> {
    caller
        .require(Action::UserManage, &Target::User(name.clone()))
        .await?;
    let user = find(&state, &name).await?;
    let grants = parse_grants(&req.grants)?;
    let record = caller_audit(
        &caller,
        "user.grants",
        &format!("user:{name}"),
        &describe_grants(&grants),
    );
    state.db.set_grants(user.id, &grants, &record).await?;
    Ok(Json(view(&state, user).await?))
}
