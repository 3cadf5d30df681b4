//! The signed-in browser user, and forms that must carry the session's CSRF token.

use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum_extra::extract::CookieJar;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::WebError;
use crate::auth::policy::Via;
use crate::auth::{ClientSource, Principal, secret};
use crate::domain::Role;
use crate::startup::AppState;

/// A signed-in dashboard user. Pages that need one redirect to `/login` without it.
#[derive(Debug, Clone)]
pub struct WebUser {
    pub name: String,
    pub role: Role,
    pub is_admin: bool,
    /// The session's synchronizer token, put in every form.
    pub csrf_token: String,
    pub principal: Principal,
    /// The session cookie's value (to end the session at logout).
    pub cookie: String,
}

impl FromRequestParts<AppState> for WebUser {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ClientSource(source) = ClientSource::from_request_parts(parts, state)
            .await
            .unwrap_or_else(|never| match never {});
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(cookie) = jar
            .get(state.auth.session_cookie_name())
            .map(|c| c.value().to_owned())
        else {
            return Err(WebError::SignIn);
        };
        let Some(session) = state.auth.session(&state.db, &cookie).await? else {
            return Err(WebError::SignIn);
        };
        let Some(role) = session.user.role else {
            return Err(WebError::SignIn);
        };
        let principal = state
            .auth
            .principal_for(&state.db, &session.user, Via::Session, &source, Some(role))
            .await?;
        Ok(WebUser {
            name: session.user.name,
            role,
            is_admin: role == Role::Admin,
            csrf_token: session.csrf_token,
            principal,
            cookie,
        })
    }
}

#[derive(Debug, Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf_token: String,
    #[serde(flatten)]
    fields: T,
}

/// A form posted by a signed-in user, accepted only with that session's CSRF token: a cross-site
/// form, or one carrying another session's token, is refused with 403 before the handler runs.
#[derive(Debug)]
pub struct CsrfForm<T> {
    pub user: WebUser,
    pub fields: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = WebError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let user = WebUser::from_request_parts(&mut parts, state).await?;
        let req = Request::from_parts(parts, body);
        let Form(form) = Form::<WithCsrf<T>>::from_request(req, state)
            .await
            .map_err(|e| {
                WebError::BadRequest(format!("the form could not be read: {}", e.body_text()))
            })?;
        if !secret::same_secret(&form.csrf_token, &user.csrf_token) {
            return Err(WebError::Csrf);
        }
        Ok(CsrfForm {
            user,
            fields: form.fields,
        })
    }
}

/// A form with no fields but the CSRF token.
#[derive(Debug, Deserialize)]
pub struct NoFields {}
