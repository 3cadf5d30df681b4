//! Users, roles, tokens, sessions, CSRF, throttling, setup and the audit log, over real HTTP.

use std::str::FromStr;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use wharf::cli::client::{ApiClient, ApiResponse};

use crate::harness::{self, TestDaemon};

fn body(value: &Value) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(value).unwrap())
}

fn json_of(response: &ApiResponse) -> Value {
    serde_json::from_slice(&response.body).unwrap_or(Value::Null)
}

async fn call(
    client: &ApiClient,
    method: Method,
    path: &str,
    payload: Option<Value>,
) -> ApiResponse {
    client
        .request(method, path, payload.as_ref().and_then(body))
        .await
        .unwrap()
}

/// Signs in through the API; returns (the `Cookie` header value, the CSRF token).
async fn login(daemon: &TestDaemon, user: &str, password: &str) -> (String, String) {
    let r = call(
        &daemon.tcp_client(),
        Method::POST,
        "/api/v1/auth/login",
        Some(json!({"username": user, "password": password})),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let set_cookie = r.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set_cookie.contains("HttpOnly")
            && set_cookie.contains("SameSite=Strict")
            && set_cookie.contains("Path=/"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    (
        cookie,
        json_of(&r)["csrf_token"].as_str().unwrap().to_owned(),
    )
}

async fn audit(daemon: &TestDaemon, query: &str) -> Vec<Value> {
    let r = call(
        &daemon.unix_client(),
        Method::GET,
        &format!("/api/v1/audit?{query}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    json_of(&r).as_array().unwrap().clone()
}

async fn db_conn(daemon: &TestDaemon) -> sqlx::SqliteConnection {
    SqliteConnectOptions::from_str("sqlite://")
        .unwrap()
        .filename(daemon.data_root.join("wharf.db"))
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn each_role_against_each_kind_of_endpoint() {
    if harness::skip_unless_root("each_role_against_each_kind_of_endpoint") {
        return;
    }
    // A registry login is checked with the registry before it is stored: a real one, on loopback.
    let Some(registry) = crate::pull::Registry::start_with_login(
        "each_role_against_each_kind_of_endpoint",
        Some(("u", "registry-secret")),
    ) else {
        return;
    };
    let login_path = format!("/api/v1/registries/logins/{}", registry.addr);
    let daemon = TestDaemon::start();
    let admin = daemon.admin_client().await;
    let operator = daemon.tcp_client_with(Some(daemon.user_with_token("olga", "operator").await));
    let viewer = daemon.tcp_client_with(Some(daemon.user_with_token("vic", "viewer").await));
    let anonymous = daemon.tcp_client();

    let new_user =
        || Some(json!({"name": "newbie", "role": "viewer", "password": "newbie-password"}));
    // (method, path, body, least role: 0 viewer, 1 operator, 2 admin)
    let cases: Vec<(Method, &str, Option<Value>, u8)> = vec![
        (Method::GET, "/api/v1/system/info", None, 0),
        (Method::GET, "/api/v1/system/version", None, 0),
        (Method::GET, "/api/v1/auth/whoami", None, 0),
        (Method::GET, "/api/v1/tokens", None, 0),
        (Method::GET, "/api/v1/tokens?all=true", None, 2),
        (Method::GET, "/api/v1/users", None, 2),
        (Method::POST, "/api/v1/users", new_user(), 2),
        (Method::GET, "/api/v1/audit", None, 2),
        (
            Method::PUT,
            login_path.as_str(),
            Some(json!({"username": "u", "password": "registry-secret"})),
            2,
        ),
        (Method::GET, "/api/v1/registries/logins", None, 2),
        (
            Method::PUT,
            "/api/v1/users/admin/grants",
            Some(json!({"grants": []})),
            2,
        ),
    ];
    for (method, path, payload, least) in cases {
        if path == "/api/v1/registries/logins" {
            let r = call(&admin, Method::GET, path, None).await;
            let text = String::from_utf8_lossy(&r.body);
            assert!(
                !text.contains("registry-secret"),
                "stored registry passwords are never sent back: {text}"
            );
        }
        for (level, (who, client)) in [("vic", &viewer), ("olga", &operator), ("admin", &admin)]
            .into_iter()
            .enumerate()
        {
            let r = call(client, method.clone(), path, payload.clone()).await;
            if level as u8 >= least {
                assert!(
                    r.status.is_success(),
                    "{who} {method} {path}: {} {:?}",
                    r.status,
                    r.body
                );
                if method == Method::POST {
                    // undo, so the next role meets the same state
                    let undo = call(
                        &daemon.unix_client(),
                        Method::DELETE,
                        "/api/v1/users/newbie",
                        None,
                    )
                    .await;
                    assert_eq!(undo.status, StatusCode::NO_CONTENT);
                }
            } else {
                assert_eq!(r.status, StatusCode::FORBIDDEN, "{who} {method} {path}");
                let message = json_of(&r)["message"].as_str().unwrap().to_owned();
                assert!(message.starts_with(&format!("{who} may not ")), "{message}");
            }
        }
        let r = call(&anonymous, method.clone(), path, payload.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "anonymous {method} {path}"
        );
        assert!(r.headers.contains_key("www-authenticate"));
    }
    // Every refusal left a denied entry naming who, what and on what.
    let denied = audit(&daemon, "outcome=denied&limit=1000").await;
    let of = |who: &str, action: &str| {
        denied
            .iter()
            .filter(|e| {
                e["actor"] == who
                    && e["action"] == action
                    && e["via"] == "token"
                    && e["source"] == "127.0.0.1"
            })
            .count()
    };
    assert_eq!(of("vic", "user.manage"), 3);
    assert_eq!(of("olga", "user.manage"), 3);
    assert_eq!(of("vic", "audit.read"), 1);
    assert_eq!(of("vic", "token.manage-any"), 1);
    assert_eq!(of("admin", "user.manage"), 0);
    // The local socket is root's door.
    let r = call(&daemon.unix_client(), Method::GET, "/api/v1/users", None).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn brute_force_on_one_account_is_throttled_and_the_user_gets_back_in() {
    if harness::skip_unless_root(
        "brute_force_on_one_account_is_throttled_and_the_user_gets_back_in",
    ) {
        return;
    }
    let daemon = TestDaemon::start();
    daemon.user_with_token("alice", "viewer").await;
    let client = daemon.tcp_client();
    let mut checked = 0;
    let mut first_throttled = None;
    for attempt in 1..=200 {
        let r = call(
            &client,
            Method::POST,
            "/api/v1/auth/login",
            Some(json!({"username": "alice", "password": format!("guess-{attempt}")})),
        )
        .await;
        match r.status {
            StatusCode::UNAUTHORIZED => {
                checked += 1;
                assert_eq!(json_of(&r)["message"], "wrong user name or password");
            }
            StatusCode::TOO_MANY_REQUESTS => {
                first_throttled.get_or_insert(attempt);
                assert!(r.headers.contains_key("retry-after"));
            }
            other => panic!("attempt {attempt}: {other}"),
        }
    }
    let first = first_throttled.expect("throttled at all");
    assert!(first <= 10, "throttled from attempt {first}");
    assert!(checked <= 10, "{checked} passwords were checked out of 200");

    // An unknown user gets exactly the same answer as a wrong password.
    let r = call(
        &client,
        Method::POST,
        "/api/v1/auth/login",
        Some(json!({"username": "nobody-here", "password": "whatever-1"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(&r)["message"], "wrong user name or password");

    // After the back-off the real user signs in.
    let retry = loop {
        let r = call(
            &client,
            Method::POST,
            "/api/v1/auth/login",
            Some(json!({"username": "alice", "password": "alice-password"})),
        )
        .await;
        if r.status == StatusCode::OK {
            break true;
        }
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(wait <= 4, "back-off {wait} s");
        tokio::time::sleep(Duration::from_secs(wait)).await;
    };
    assert!(retry);
    let failed = audit(&daemon, "action=auth.login&outcome=failed&limit=1000").await;
    assert!(failed.iter().any(|e| e["detail"] == "throttled"));
    assert!(
        failed
            .iter()
            .all(|e| !e["detail"].as_str().unwrap().contains("guess")),
        "no password in the log"
    );
}

#[tokio::test]
async fn one_guess_each_for_many_accounts_from_one_address_is_throttled() {
    if harness::skip_unless_root("one_guess_each_for_many_accounts_from_one_address_is_throttled") {
        return;
    }
    let daemon = TestDaemon::start();
    daemon.user_with_token("bob", "viewer").await;
    let client = daemon.tcp_client();
    let mut first_throttled = None;
    for i in 1..=200 {
        let r = call(
            &client,
            Method::POST,
            "/api/v1/auth/login",
            Some(json!({"username": format!("user{i}"), "password": "password1"})),
        )
        .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            first_throttled.get_or_insert(i);
        } else {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        }
    }
    let first = first_throttled.expect("the address was throttled");
    assert!(first <= 20, "throttled from account {first}");
    // The address's back-off ends; the real user (same address) signs in.
    let mut waited = 0;
    loop {
        let r = call(
            &client,
            Method::POST,
            "/api/v1/auth/login",
            Some(json!({"username": "bob", "password": "bob-password"})),
        )
        .await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        waited += wait;
        assert!(waited <= 8, "back-off too long: {waited} s");
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

#[tokio::test]
async fn a_session_needs_its_own_csrf_token_to_change_anything() {
    if harness::skip_unless_root("a_session_needs_its_own_csrf_token_to_change_anything") {
        return;
    }
    let daemon = TestDaemon::start();
    daemon.user_with_token("carol", "admin").await;
    daemon.user_with_token("dave", "admin").await;
    let (carol_cookie, carol_csrf) = login(&daemon, "carol", "carol-password").await;
    let (_, dave_csrf) = login(&daemon, "dave", "dave-password").await;
    let client = daemon.tcp_client();
    let new_user =
        body(&json!({"name": "mallory", "role": "admin", "password": "mallory-password"}));

    let r = client
        .request_with_headers(
            Method::GET,
            "/api/v1/users",
            &[("cookie", &carol_cookie)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "reads need no CSRF token");

    for headers in [
        vec![("cookie", carol_cookie.as_str())],
        vec![
            ("cookie", carol_cookie.as_str()),
            ("x-csrf-token", dave_csrf.as_str()),
        ],
        vec![("cookie", carol_cookie.as_str()), ("x-csrf-token", "")],
    ] {
        let r = client
            .request_with_headers(Method::POST, "/api/v1/users", &headers, new_user.clone())
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert!(json_of(&r)["message"].as_str().unwrap().contains("CSRF"));
    }
    let users = call(&daemon.unix_client(), Method::GET, "/api/v1/users", None).await;
    assert!(
        !String::from_utf8_lossy(&users.body).contains("mallory"),
        "nothing changed"
    );

    let r = client
        .request_with_headers(
            Method::POST,
            "/api/v1/users",
            &[("cookie", &carol_cookie), ("x-csrf-token", &carol_csrf)],
            new_user.clone(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);

    // Logout ends the session: the cookie no longer works.
    let r = client
        .request_with_headers(
            Method::POST,
            "/api/v1/auth/logout",
            &[("cookie", &carol_cookie), ("x-csrf-token", &carol_csrf)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = client
        .request_with_headers(
            Method::GET,
            "/api/v1/users",
            &[("cookie", &carol_cookie)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sessions_end_at_password_change_and_after_idle_or_absolute_timeouts() {
    if harness::skip_unless_root(
        "sessions_end_at_password_change_and_after_idle_or_absolute_timeouts",
    ) {
        return;
    }
    let daemon = TestDaemon::start();
    daemon.user_with_token("erin", "viewer").await;
    let client = daemon.tcp_client();
    let whoami = |cookie: String| {
        let client = client.clone();
        async move {
            client
                .request_with_headers(
                    Method::GET,
                    "/api/v1/auth/whoami",
                    &[("cookie", &cookie)],
                    None,
                )
                .await
                .unwrap()
                .status
        }
    };
    let (first, _) = login(&daemon, "erin", "erin-password").await;
    let (second, second_csrf) = login(&daemon, "erin", "erin-password").await;
    assert_ne!(first, second, "a new session id at every sign-in");
    assert_eq!(whoami(first.clone()).await, StatusCode::OK);

    // Changing one's own password needs the current one, and ends every session.
    let change = |current: &str| {
        body(&json!({"password": "erin-new-password", "current_password": current}))
    };
    let r = client
        .request_with_headers(
            Method::PUT,
            "/api/v1/users/erin/password",
            &[("cookie", &second), ("x-csrf-token", &second_csrf)],
            change("not-it-at-all"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = client
        .request_with_headers(
            Method::PUT,
            "/api/v1/users/erin/password",
            &[("cookie", &second), ("x-csrf-token", &second_csrf)],
            change("erin-password"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert_eq!(whoami(first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(whoami(second).await, StatusCode::UNAUTHORIZED);

    // Idle and absolute timeouts, by ageing the rows.
    let mut conn = db_conn(&daemon).await;
    for (column, ageing) in [
        (
            "last_seen_at",
            "UPDATE sessions SET last_seen_at = last_seen_at - 31 * 60",
        ),
        (
            "created_at",
            "UPDATE sessions SET created_at = created_at - 13 * 3600",
        ),
    ] {
        let (cookie, _) = login(&daemon, "erin", "erin-new-password").await;
        assert_eq!(whoami(cookie.clone()).await, StatusCode::OK);
        sqlx::query(ageing).execute(&mut conn).await.unwrap();
        assert_eq!(whoami(cookie).await, StatusCode::UNAUTHORIZED, "{column}");
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0, "expired sessions are removed");
}

#[tokio::test]
async fn revoked_expired_and_tampered_tokens_get_401_and_no_secret_is_stored() {
    if harness::skip_unless_root(
        "revoked_expired_and_tampered_tokens_get_401_and_no_secret_is_stored",
    ) {
        return;
    }
    let daemon = TestDaemon::start();
    let admin = daemon.admin_client().await;
    let create = |expires: Option<&str>| {
        let admin = admin.clone();
        let expires = expires.map(str::to_owned);
        async move {
            let r = call(
                &admin,
                Method::POST,
                "/api/v1/tokens",
                Some(json!({"name": "t", "role": "viewer", "expires_in": expires})),
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
            let v = json_of(&r);
            (
                v["token"].as_str().unwrap().to_owned(),
                v["info"]["id"].as_i64().unwrap(),
            )
        }
    };
    let status_with = |token: String| {
        let client = daemon.tcp_client_with(Some(token));
        async move {
            let r = call(&client, Method::GET, "/api/v1/system/version", None).await;
            (
                r.status,
                json_of(&r)["message"].as_str().unwrap_or("").to_owned(),
            )
        }
    };

    let (live, live_id) = create(None).await;
    assert_eq!(status_with(live.clone()).await.0, StatusCode::OK);
    let listed = json_of(&call(&admin, Method::GET, "/api/v1/tokens", None).await);
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == live_id)
        .unwrap()
        .clone();
    assert!(
        entry["last_used_at"].as_i64().is_some(),
        "last use recorded: {entry}"
    );
    assert_eq!(entry["prefix"], &live[..12]);
    assert!(
        !listed.to_string().contains(&live),
        "listings never hold the token"
    );
    // A viewer token cannot do admin things even though its owner can.
    let r = call(
        &daemon.tcp_client_with(Some(live.clone())),
        Method::GET,
        "/api/v1/users",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let mut tampered = live.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let (status, message) = status_with(String::from_utf8(tampered).unwrap()).await;
    assert_eq!(
        (status, message.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid API token: unknown token")
    );
    let (status, _) = status_with("Bearer-less-garbage".into()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (short, _) = create(Some("1s")).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        status_with(short).await,
        (
            StatusCode::UNAUTHORIZED,
            "invalid API token: the token has expired".into()
        )
    );

    let r = call(
        &admin,
        Method::DELETE,
        &format!("/api/v1/tokens/{live_id}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        status_with(live.clone()).await,
        (
            StatusCode::UNAUTHORIZED,
            "invalid API token: the token was revoked".into()
        )
    );

    let r = call(
        &admin,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "t", "expires_in": "soon"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        json_of(&r)["message"]
            .as_str()
            .unwrap()
            .contains("invalid expiry \"soon\"")
    );

    // Neither the raw token nor a password is anywhere in the database files.
    drop(admin);
    let mut bytes = Vec::new();
    for file in ["wharf.db", "wharf.db-wal"] {
        if let Ok(b) = std::fs::read(daemon.data_root.join(file)) {
            bytes.extend(b);
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains(&live), "raw token stored");
    assert!(!text.contains("admin-password"), "password stored");
    assert!(
        text.contains(&wharf::auth::secret::digest(&live)),
        "the digest is what is kept"
    );
}

#[tokio::test]
async fn first_run_setup_creates_one_admin_with_the_printed_token() {
    if harness::skip_unless_root("first_run_setup_creates_one_admin_with_the_printed_token") {
        return;
    }
    let daemon = TestDaemon::start();
    let url = daemon
        .setup_url
        .clone()
        .expect("a setup URL on a fresh data root");
    assert!(
        url.starts_with(&format!("http://{}/setup?token=", daemon.tcp)),
        "{url}"
    );
    let token = url.split("token=").nth(1).unwrap().to_owned();
    let client = daemon.tcp_client();
    let setup = |token: String, name: &str| {
        Some(json!({"token": token, "username": name, "password": "first-admin-pw"}))
    };

    let r = call(
        &client,
        Method::POST,
        "/api/v1/setup",
        setup("wrong-token".into(), "root-admin"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = call(
        &client,
        Method::POST,
        "/api/v1/setup",
        Some(json!({"token": token, "username": "x", "password": "short"})),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "a weak password is refused before the token is spent"
    );
    let r = call(
        &client,
        Method::POST,
        "/api/v1/setup",
        setup(token.clone(), "root-admin"),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(json_of(&r)["role"], "admin");
    let r = call(
        &client,
        Method::POST,
        "/api/v1/setup",
        setup(token, "second-admin"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "the token is single-use");

    login(&daemon, "root-admin", "first-admin-pw").await;
    let entries = audit(&daemon, "action=setup.complete").await;
    let outcomes: Vec<&str> = entries
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["denied", "ok", "denied"]);
}

#[tokio::test]
async fn robots_cannot_sign_in_and_old_hashes_are_upgraded_at_login() {
    if harness::skip_unless_root("robots_cannot_sign_in_and_old_hashes_are_upgraded_at_login") {
        return;
    }
    let daemon = TestDaemon::start();
    let socket = daemon.unix_client();
    let r = call(&socket, Method::POST, "/api/v1/users", Some(json!({"name": "ci", "kind": "robot", "password": "robot-password", "grants": [{"pattern": "team/*", "pull": true}]}))).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(json_of(&r)["grants"][0]["pattern"], "team/*");
    let r = call(
        &socket,
        Method::POST,
        "/api/v1/users",
        Some(
            json!({"name": "ci2", "kind": "robot", "role": "admin", "password": "robot-password"}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(
        &daemon.tcp_client(),
        Method::POST,
        "/api/v1/auth/login",
        Some(json!({"username": "ci", "password": "robot-password"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        json_of(&r)["message"],
        "robot accounts can only use the registry"
    );
    let r = call(
        &socket,
        Method::POST,
        "/api/v1/users",
        Some(json!({"name": "Bad Name", "role": "viewer", "password": "long-enough"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        json_of(&r)["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid user name \"Bad Name\"")
    );

    // A hash made with weaker parameters is replaced at the next successful login.
    daemon.user_with_token("frank", "viewer").await;
    let weak = {
        use argon2::password_hash::PasswordHasher;
        argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(4096, 1, 1, None).unwrap(),
        )
        .hash_password(b"frank-password")
        .unwrap()
        .to_string()
    };
    let mut conn = db_conn(&daemon).await;
    sqlx::query("UPDATE users SET password_hash = ? WHERE name = 'frank'")
        .bind(&weak)
        .execute(&mut conn)
        .await
        .unwrap();
    login(&daemon, "frank", "frank-password").await;
    let stored: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE name = 'frank'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    login(&daemon, "frank", "frank-password").await;
}

#[tokio::test]
async fn the_audit_log_filters_exports_csv_and_cannot_be_rewritten() {
    if harness::skip_unless_root("the_audit_log_filters_exports_csv_and_cannot_be_rewritten") {
        return;
    }
    let daemon = TestDaemon::start();
    let admin = daemon.admin_client().await;
    call(
        &admin,
        Method::POST,
        "/api/v1/users",
        Some(json!({"name": "gina", "role": "viewer", "password": "gina-password"})),
    )
    .await;
    call(&admin, Method::DELETE, "/api/v1/users/gina", None).await;
    let users = audit(&daemon, "action=user.").await;
    let actions: Vec<&str> = users
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["user.delete", "user.create", "user.create"],
        "newest first"
    );
    assert_eq!(users[0]["actor"], "admin");
    assert_eq!(users[0]["target"], "user:gina");
    assert_eq!(users[0]["source"], "127.0.0.1");

    let r = call(
        &admin,
        Method::GET,
        "/api/v1/audit?actor=admin&format=csv",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type.as_deref().unwrap().starts_with("text/csv"));
    let csv = String::from_utf8(r.body.to_vec()).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("id,time,actor,via,source,action,target,outcome,detail")
    );
    assert!(
        csv.contains(",admin,token,127.0.0.1,user.delete,user:gina,ok,"),
        "{csv}"
    );
    let r = call(
        &admin,
        Method::GET,
        "/api/v1/audit?since=yesterday-ish",
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let future = call(&admin, Method::GET, "/api/v1/audit?since=4102444800", None).await;
    assert_eq!(json_of(&future), json!([]));

    let mut conn = db_conn(&daemon).await;
    for statement in [
        "UPDATE audit_log SET actor = 'nobody'",
        "DELETE FROM audit_log",
    ] {
        let err = sqlx::query(statement)
            .execute(&mut conn)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("append-only"), "{statement}: {err}");
    }
}
