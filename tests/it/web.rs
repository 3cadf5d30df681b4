//! The dashboard's sign-in, setup, sign-out and account forms over real HTTP, with their CSRF
//! protection and security headers.

use hyper::{Method, StatusCode};
use wharf::cli::client::{ApiClient, ApiResponse};

use crate::harness::{self, TestDaemon};

fn form(fields: &[(&str, &str)]) -> Option<Vec<u8>> {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    Some(
        fields
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&")
            .into_bytes(),
    )
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

pub(crate) fn text(r: &ApiResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The value of `name` in the response's Set-Cookie headers, as a `Cookie` header part.
fn cookie(r: &ApiResponse, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|kv| kv.starts_with(&format!("{name}=")) && kv.len() > name.len() + 1)
        .map(str::to_owned)
}

/// The value of the hidden `csrf_token` field of a page.
fn csrf_field(page: &str) -> String {
    let at = page
        .find("name=\"csrf_token\" value=\"")
        .expect("a CSRF field")
        + 25;
    page[at..].split('"').next().unwrap().to_owned()
}

pub(crate) async fn get(client: &ApiClient, path: &str, cookie: &str) -> ApiResponse {
    client
        .request_with_headers(Method::GET, path, &[("cookie", cookie)], None)
        .await
        .unwrap()
}

async fn post(
    client: &ApiClient,
    path: &str,
    cookie: &str,
    fields: &[(&str, &str)],
) -> ApiResponse {
    client
        .request_with_headers(
            Method::POST,
            path,
            &[("cookie", cookie), FORM],
            form(fields),
        )
        .await
        .unwrap()
}

/// Signs in through the form; returns the session cookie.
pub(crate) async fn sign_in(client: &ApiClient, user: &str, password: &str) -> String {
    let page = client.request(Method::GET, "/login", None).await.unwrap();
    let login_cookie = cookie(&page, "wharf_login_csrf").expect("login CSRF cookie");
    let token = csrf_field(&text(&page));
    let r = post(
        client,
        "/login",
        &login_cookie,
        &[
            ("csrf_token", &token),
            ("username", user),
            ("password", password),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    assert_eq!(r.headers["location"], "/");
    cookie(&r, "wharf_session").expect("session cookie")
}

#[tokio::test]
async fn setup_sign_in_and_sign_out_through_the_forms() {
    if harness::skip_unless_root("setup_sign_in_and_sign_out_through_the_forms") {
        return;
    }
    let daemon = TestDaemon::start();
    let client = daemon.tcp_client();
    let url = daemon.setup_url.clone().unwrap();
    let path = &url[url.find("/setup").unwrap()..];
    let token = path.split("token=").nth(1).unwrap();

    let page = client.request(Method::GET, path, None).await.unwrap();
    assert_eq!(page.status, StatusCode::OK);
    for (header, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
    ] {
        assert_eq!(page.headers[header], value);
    }
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    let r = post(
        &client,
        "/setup",
        "",
        &[
            ("token", token),
            ("username", "root"),
            ("password", "rootpass1"),
            ("password_again", "different1"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(text(&r).contains("The two passwords differ."));
    let r = post(
        &client,
        "/setup",
        "",
        &[
            ("token", token),
            ("username", "root"),
            ("password", "rootpass1"),
            ("password_again", "rootpass1"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        client
            .request(Method::GET, path, None)
            .await
            .unwrap()
            .status,
        StatusCode::NOT_FOUND,
        "setup is over"
    );

    // Not signed in: pages send you to the sign-in page.
    let r = client.request(Method::GET, "/", None).await.unwrap();
    assert_eq!(
        (r.status, r.headers["location"].to_str().unwrap()),
        (StatusCode::SEE_OTHER, "/login")
    );

    // The sign-in form needs its own CSRF cookie.
    let page = client.request(Method::GET, "/login", None).await.unwrap();
    let token = csrf_field(&text(&page));
    let r = post(
        &client,
        "/login",
        "",
        &[
            ("csrf_token", &token),
            ("username", "root"),
            ("password", "rootpass1"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let login_cookie = cookie(&page, "wharf_login_csrf").unwrap();
    let r = post(
        &client,
        "/login",
        &login_cookie,
        &[
            ("csrf_token", &token),
            ("username", "root"),
            ("password", "wrong-pass"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(text(&r).contains("wrong user name or password"));

    let session = sign_in(&client, "root", "rootpass1").await;
    let home = get(&client, "/", &session).await;
    assert_eq!(home.status, StatusCode::OK);
    let html = text(&home);
    assert!(
        html.contains("<span id=\"signed-in-as\">root</span>")
            && html.contains("<span class=\"role\" id=\"signed-in-role\">admin</span>"),
        "{html}"
    );

    // Signing out needs the session's token; afterwards the cookie is dead.
    let r = post(&client, "/logout", &session, &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = post(
        &client,
        "/logout",
        &session,
        &[("csrf_token", &csrf_field(&html))],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        get(&client, "/", &session).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn cross_site_form_posts_change_nothing() {
    if harness::skip_unless_root("cross_site_form_posts_change_nothing") {
        return;
    }
    let daemon = TestDaemon::start();
    daemon.user_with_token("hana", "operator").await;
    daemon.user_with_token("ivan", "operator").await;
    let client = daemon.tcp_client();
    let hana = sign_in(&client, "hana", "hana-password").await;
    let ivan = sign_in(&client, "ivan", "ivan-password").await;
    let hana_csrf = csrf_field(&text(&get(&client, "/account", &hana).await));
    let ivan_csrf = csrf_field(&text(&get(&client, "/account", &ivan).await));
    assert_ne!(hana_csrf, ivan_csrf);

    let tokens_of_hana = || async {
        let page = text(&get(&client, "/account", &hana).await);
        page.matches("/revoke\"").count()
    };
    let before = tokens_of_hana().await;
    let new_password = [
        ("current_password", "hana-password"),
        ("password", "hijacked-pw"),
        ("password_again", "hijacked-pw"),
    ];
    for token in [None, Some(ivan_csrf.as_str()), Some("")] {
        let mut fields = vec![
            ("name", "evil"),
            ("role", "operator"),
            ("expires_in", "30d"),
        ];
        let mut password_fields = new_password.to_vec();
        if let Some(t) = token {
            fields.push(("csrf_token", t));
            password_fields.push(("csrf_token", t));
        }
        let r = post(&client, "/account/tokens", &hana, &fields).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "token {token:?}");
        assert!(text(&r).contains("CSRF token"));
        let r = post(&client, "/account/password", &hana, &password_fields).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "token {token:?}");
    }
    assert_eq!(tokens_of_hana().await, before, "no token was made");
    assert_eq!(
        get(&client, "/", &hana).await.status,
        StatusCode::OK,
        "the password was not changed (session alive)"
    );

    // With the session's own token the same forms work; the new token is shown once.
    let r = post(
        &client,
        "/account/tokens",
        &hana,
        &[
            ("csrf_token", &hana_csrf),
            ("name", "laptop"),
            ("role", "viewer"),
            ("expires_in", "7d"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let page = text(&r);
    let shown = page
        .split("<pre id=\"new-token\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    assert!(shown.starts_with("wharf_"));
    let later = text(&get(&client, "/account", &hana).await);
    assert!(!later.contains(&shown), "shown only once");
    assert!(
        later.contains(&format!("{}…", &shown[..12])),
        "listed by its prefix"
    );
    let api = daemon.tcp_client_with(Some(shown));
    assert_eq!(
        api.request(Method::GET, "/api/v1/auth/whoami", None)
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );

    // An operator may not mint an admin token.
    let r = post(
        &client,
        "/account/tokens",
        &hana,
        &[
            ("csrf_token", &hana_csrf),
            ("name", "x"),
            ("role", "admin"),
            ("expires_in", ""),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let mut fields = new_password.to_vec();
    fields.push(("csrf_token", &hana_csrf));
    let r = post(&client, "/account/password", &hana, &fields).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        get(&client, "/", &hana).await.status,
        StatusCode::SEE_OTHER,
        "sessions end at a password change"
    );
    sign_in(&client, "hana", "hijacked-pw").await;
}

#[tokio::test]
async fn the_audit_page_is_for_admins() {
    if harness::skip_unless_root("the_audit_page_is_for_admins") {
        return;
    }
    let daemon = TestDaemon::start();
    daemon.user_with_token("jo", "viewer").await;
    daemon.user_with_token("kim", "admin").await;
    let client = daemon.tcp_client();
    let jo = sign_in(&client, "jo", "jo-password").await;
    let r = get(&client, "/audit", &jo).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(text(&r).contains("jo may not audit.read"));
    assert!(
        !text(&get(&client, "/", &jo).await).contains("href=\"/audit\""),
        "no link for viewers"
    );

    // The settings page too: admins only.
    let r = get(&client, "/settings", &jo).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        !text(&get(&client, "/", &jo).await).contains("href=\"/settings\""),
        "no link for viewers"
    );

    let kim = sign_in(&client, "kim", "kim-password").await;
    let r = get(&client, "/settings", &kim).await;
    assert_eq!(r.status, StatusCode::OK);
    let page = text(&r);
    let data_root = daemon.dir.path().display().to_string();
    assert!(
        page.contains("<td class=\"mono\">data_root</td>") && page.contains(&data_root),
        "{page}"
    );
    assert!(
        page.contains(&format!("{}", daemon.registry.unwrap())),
        "the registry's address: {page}"
    );
    assert!(text(&get(&client, "/", &kim).await).contains("href=\"/settings\""));

    let r = get(&client, "/audit?outcome=denied", &kim).await;
    assert_eq!(r.status, StatusCode::OK);
    let page = text(&r);
    assert!(page.contains("<td>jo</td><td>session</td><td>127.0.0.1</td><td>audit.read</td><td>audit</td><td>denied</td>"), "{page}");
    let csv_link = page
        .split("href=\"/api/v1/audit?")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(
        csv_link.contains("format=csv") && csv_link.ends_with("outcome=denied"),
        "{csv_link}"
    );
    let css = page
        .split("href=\"/static/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let r = client
        .request(Method::GET, &format!("/static/{css}"), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_renders_empty_and_populated_and_escapes_what_users_gave() {
    let test = "web::every_page_renders_empty_and_populated_and_escapes_what_users_gave";
    if harness::skip_unless_root(test) {
        return;
    }
    let Some(busybox) = crate::fixtures::busybox(test) else {
        return;
    };
    let daemon = TestDaemon::start();
    daemon.user_with_token("kim", "admin").await;
    let client = daemon.tcp_client();
    let kim = sign_in(&client, "kim", "kim-password").await;
    let page = |path: &'static str| {
        let (client, kim) = (&client, &kim);
        async move {
            let r = get(client, path, kim).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", text(&r));
            text(&r)
        }
    };
    // Empty: each list says so.
    for (path, empty) in [
        ("/containers", "id=\"no-containers\""),
        ("/images", "id=\"no-images\""),
        ("/volumes", "id=\"no-volumes\""),
        ("/networks", "id=\"no-networks\""),
        ("/registry", "id=\"no-repositories\""),
    ] {
        assert!(page(path).await.contains(empty), "{path} empty");
    }
    for path in ["/", "/containers/new", "/users", "/audit", "/account"] {
        page(path).await;
    }

    // Populated: an image, a volume, and a container whose command and environment carry markup.
    let host = daemon.host();
    let _cleanup = harness::RemoveContainers(host.clone());
    daemon.load_busybox(&busybox);
    let socket = daemon.unix_client();
    let _: serde_json::Value = socket
        .send_json(
            Method::POST,
            "/api/v1/volumes",
            &serde_json::json!({"name": "keep-me"}),
        )
        .await
        .unwrap();
    let created: serde_json::Value = socket
        .send_json(
            Method::POST,
            "/api/v1/containers",
            &serde_json::json!({
                "name": "marked-up",
                "image": "wharf-test/busybox:latest",
                "cmd": ["echo", "<script>alert(1)</script>"],
                "env": ["NOTE=<img src=x onerror=alert(2)>"],
            }),
        )
        .await
        .unwrap();
    assert!(page("/containers").await.contains("marked-up"));
    // A page past the last shows the last; a page that is no number, the first.
    assert!(page("/containers?page=9").await.contains("1–1 of 1"));
    assert!(page("/containers?page=abc").await.contains("1–1 of 1"));
    // Pages go out compressed to a browser that accepts it.
    let r = client
        .request_with_headers(
            Method::GET,
            "/containers",
            &[("cookie", &kim), ("accept-encoding", "gzip")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.headers.get("content-encoding").unwrap(), "gzip");
    assert!(page("/volumes").await.contains("keep-me"));
    assert!(page("/images").await.contains("wharf-test/busybox"));
    assert!(page("/registry").await.contains("wharf-test/busybox"));
    assert!(
        page("/")
            .await
            .contains("<a href=\"/containers?state=created\">1 created</a>")
    );
    let id = created["id"].as_str().unwrap();
    let r = get(&client, &format!("/containers/{id}"), &kim).await;
    assert_eq!(r.status, StatusCode::OK);
    let detail = text(&r);
    assert!(
        detail.contains("echo &#60;script&#62;alert(1)&#60;/script&#62;")
            && !detail.contains("<script>alert"),
        "{detail}"
    );
    assert!(!detail.contains("<img"), "{detail}");
    let r = get(
        &client,
        "/images/detail?name=wharf-test/busybox:latest",
        &kim,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(text(&r).contains("id=\"history\""));
    // An image made of that container carries the markup in its config and history: its page,
    // its repository's and its manifest's show it as text.
    let made: serde_json::Value = socket
        .send_json(
            Method::POST,
            &format!("/api/v1/containers/{id}/commit"),
            &serde_json::json!({"repository": "wharf-test/marked:v1",
                "comment": "<script>alert(3)</script>", "author": "<b>me</b>"}),
        )
        .await
        .unwrap();
    let image = page("/images/detail?name=wharf-test/marked:v1").await;
    assert!(
        image.contains("&#60;script&#62;alert(3)")
            && image.contains("&#60;img src=x onerror=alert(2)&#62;")
            && !image.contains("<script>alert")
            && !image.contains("<img")
            && !image.contains("<b>me"),
        "{image}"
    );
    let manifest_path = format!(
        "/registry/manifest?repository=wharf-test/marked&digest={}",
        made["digest"].as_str().unwrap()
    );
    let r = get(&client, &manifest_path, &kim).await;
    assert_eq!(r.status, StatusCode::OK);
    let manifest = text(&r);
    assert!(manifest.contains("id=\"layer-table\""), "{manifest}");
    // 100 rows a page, the filter and search kept in the links (and encoded).
    for i in 0..101 {
        let _: serde_json::Value = socket
            .send_json(
                Method::POST,
                "/api/v1/containers",
                &serde_json::json!({"name": format!("p{i:03}"), "image": "wharf-test/busybox:latest", "cmd": ["true"]}),
            )
            .await
            .unwrap();
    }
    let first = page("/containers").await;
    assert!(first.contains("1–100 of 102"), "{first}");
    assert!(
        first.contains("href=\"/containers?state=&#38;q=&#38;page=2\" id=\"next-page\"")
            && !first.contains("id=\"previous-page\""),
        "{first}"
    );
    let second = page("/containers?page=2").await;
    assert!(second.contains("101–102 of 102") && second.contains("id=\"previous-page\""));
    assert_eq!(second.matches("class=\"container-name\"").count(), 2);
    let searched = page("/containers?state=created&q=p0%26x").await;
    assert!(searched.contains("No container matches."), "{searched}");
    let searched = page("/containers?state=created&q=p0").await;
    assert!(searched.contains("1–100 of 100 (of 102)"), "{searched}");
    assert!(
        searched.contains("hx-get=\"/containers?state=created&#38;q=p0&#38;page=1\""),
        "the refresh keeps filter and search: {searched}"
    );

    // Unknown things are a clear 404 page.
    let r = get(&client, "/containers/nope", &kim).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(text(&r).contains("nope"), "{}", text(&r));
    let r = get(&client, "/registry/repository?name=absent/repo", &kim).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(text(&r).contains("repository absent/repo not found"));
    let absent = format!("sha256:{}", "0".repeat(64));
    let r = get(
        &client,
        &format!("/registry/manifest?repository=absent/repo&digest={absent}"),
        &kim,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        text(&r).contains(&format!(
            "manifest {absent} is not in repository absent/repo"
        )),
        "{}",
        text(&r)
    );
}
