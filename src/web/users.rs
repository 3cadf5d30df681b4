//! The Users page (admins): people and robot accounts with their roles and registry rights;
//! make one, remove one. Changes are JSON API calls from `static/users.js`, under the API's
//! rights and audit.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;

use super::error::WebError;
use super::session::WebUser;
use crate::auth::{Action, Target, authorize};
use crate::startup::AppState;

/// One account on the Users page.
pub struct UserRow {
    pub name: String,
    pub kind: &'static str,
    pub role: String,
    pub created: String,
    /// `pattern (pull, push)` of each grant.
    pub grants: String,
    /// The signed-in admin's own row (it cannot remove itself).
    pub is_me: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "users.html")]
pub struct UsersPage {
    pub user: WebUser,
    pub users: Vec<UserRow>,
}

pub async fn users(State(state): State<AppState>, user: WebUser) -> Result<UsersPage, WebError> {
    authorize(
        &user.principal,
        Action::UserManage,
        &Target::User("*".into()),
    )
    .map_err(|d| WebError::Forbidden(d.to_string()))?;
    let mut rows = Vec::new();
    for account in state.db.list_users().await? {
        let view = crate::api::users::view(&state, account)
            .await
            .map_err(WebError::from_api)?;
        let grants = view
            .grants
            .iter()
            .map(|g| format!("{} ({})", g.pattern, g.rights().join(", ")))
            .collect::<Vec<_>>()
            .join("; ");
        rows.push(UserRow {
            is_me: view.name == user.name,
            kind: view.kind.as_str(),
            role: view.role.map_or_else(|| "-".to_owned(), |r| r.to_string()),
            created: super::pages::time_text(Some(view.created_at)),
            grants,
            name: view.name,
        });
    }
    Ok(UsersPage { user, users: rows })
}
