//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`): the
//! dashboard as a person uses it. The WebDriver client is the few JSON calls the tests need.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};
use wharf::cli::client::{ApiClient, Endpoint};

use crate::harness::{self, TestDaemon};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// WebDriver's Tab and Enter keys.
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// A chromedriver process and one browser session, both ended on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    client: ApiClient,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, or records a skip and returns `None`.
    pub async fn start(test: &str) -> Option<Browser> {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            if !std::path::Path::new(binary).exists() {
                harness::skip(
                    test,
                    &format!("{binary} is missing: install chromium and chromium-driver"),
                );
                return None;
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Chromium leaves org.chromium.* scratch dirs in TMPDIR: keep them in the profile dir.
        let profile = tempfile::tempdir().unwrap();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .env("TMPDIR", profile.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let client = ApiClient::new(
            Endpoint::Http {
                authority: format!("127.0.0.1:{port}"),
            },
            None,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.request(Method::GET, "/status", None).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let mut browser = Browser {
            driver,
            port,
            client,
            session: String::new(),
            _profile: profile,
        };
        let created = browser
            .call(Method::POST, "/session", Some(capabilities))
            .await;
        browser.session = created["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_owned();
        Some(browser)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        let r = self
            .client
            .request(method.clone(), path, body)
            .await
            .unwrap();
        let value: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert!(
            r.status.is_success(),
            "WebDriver {method} {path}: {} {value}",
            r.status
        );
        value["value"].clone()
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.call(Method::POST, &self.at("/url"), Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        self.call(Method::GET, &self.at("/url"), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The element matching a CSS selector, waiting up to 10 s for it to appear.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let body = serde_json::to_vec(&json!({"using": "css selector", "value": css})).unwrap();
            let r = self
                .client
                .request(Method::POST, &self.at("/element"), Some(body))
                .await
                .unwrap();
            if r.status.is_success() {
                let v: Value = serde_json::from_slice(&r.body).unwrap();
                return v["value"][ELEMENT].as_str().unwrap().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no element {css} on {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            Method::POST,
            &self.at(&format!("/element/{id}/value")),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call(
            Method::POST,
            &self.at(&format!("/element/{id}/click")),
            Some(json!({})),
        )
        .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.call(Method::GET, &self.at(&format!("/element/{id}/text")), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Makes the window `width` × `height` CSS pixels (a phone's, say).
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            Method::POST,
            &self.at("/window/rect"),
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Runs a script in the page (WebDriver scripts are not subject to the page's CSP).
    pub async fn eval(&self, script: &str) -> Value {
        self.call(
            Method::POST,
            &self.at("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Presses and releases `key` (a character, or a WebDriver key such as [`TAB`]) where the
    /// keyboard's focus is.
    pub async fn press(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key},
        ]}]});
        self.call(Method::POST, &self.at("/actions"), Some(actions))
            .await;
    }

    /// On the sign-in page: signs in and waits for the overview.
    pub async fn sign_in(&self, base: &str, user: &str, password: &str) {
        self.type_into("#username", user).await;
        self.type_into("#password", password).await;
        self.click("#sign-in").await;
        self.wait_for_path(base, "/").await;
    }

    /// Waits until the page's path (and query) is `expected`.
    /// Signs out through the header's button, then in as `user`.
    pub async fn sign_out_and_in(&self, base: &str, user: &str, password: &str) {
        self.click("#logout").await;
        self.wait_for_path(base, "/login?message=signed-out").await;
        self.sign_in(base, user, password).await;
    }

    pub async fn wait_for_path(&self, base: &str, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.url().await;
            if url.strip_prefix(base) == Some(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "at {url}, expected {base}{expected}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG screenshot of the page.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let data = self.call(Method::GET, &self.at("/screenshot"), None).await;
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap()
    }
}

impl Browser {
    /// Ends the session and the driver (as a drop does), and checks that no process of the
    /// browser is left (each has the profile directory on its command line).
    pub fn close(self) {
        let profile = self._profile.path().display().to_string();
        drop(self);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left: Vec<String> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .filter(|c| c.contains(&profile))
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "browser processes left running: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session is ended first, so chromedriver closes Chromium: killing only the driver
        // left the browser's processes running. A plain blocking request, as this is a drop.
        if !self.session.is_empty()
            && let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port))
        {
            use std::io::{Read, Write};
            let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
            let _ = write!(
                stream,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session, self.port
            );
            let _ = stream.read_to_end(&mut Vec::new());
        }
        // Then the driver: our child, killed by its pid.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test]
async fn first_admin_signs_in_makes_a_token_and_signs_out_in_chromium() {
    let test = "browser::first_admin_signs_in_makes_a_token_and_signs_out_in_chromium";
    if harness::skip_unless_root(test) {
        return;
    }
    let daemon = TestDaemon::start();
    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let base = format!("http://127.0.0.1:{}", daemon.tcp.port());

    // First-run setup from the printed link.
    browser.goto(daemon.setup_url.as_ref().unwrap()).await;
    browser.type_into("#username", "root").await;
    browser.type_into("#password", "correct horse").await;
    browser.type_into("#password-again", "correct horse").await;
    browser.click("#create-admin").await;
    browser
        .wait_for_path(&base, "/login?message=admin-created")
        .await;

    // A wrong password, then the right one.
    browser.type_into("#username", "root").await;
    browser.type_into("#password", "wrong horse").await;
    browser.click("#sign-in").await;
    assert_eq!(browser.text("#error").await, "wrong user name or password");
    browser.sign_in(&base, "root", "correct horse").await;
    assert_eq!(browser.text("#signed-in-as").await, "root");
    assert_eq!(browser.text("#signed-in-role").await, "admin");
    // The stylesheet loads under the strict CSP.
    let background = browser
        .eval("return getComputedStyle(document.querySelector('header.top')).backgroundColor;")
        .await;
    assert_eq!(background, "rgb(17, 24, 39)");

    // An API token from the account page, shown once, usable at once.
    browser.goto(&format!("{base}/account")).await;
    browser.type_into("#token-name", "from-the-browser").await;
    browser.click("#create-token").await;
    let token = browser.text("#new-token").await;
    assert!(token.starts_with("wharf_"), "{token}");
    let api = daemon.tcp_client_with(Some(token));
    let me: Value = api.get_json("/api/v1/auth/whoami").await.unwrap();
    assert_eq!(me["name"], "root");
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"));
    if let Ok(dir) = std::env::var("WHARF_SCREENSHOTS") {
        std::fs::write(format!("{dir}/account.png"), &png).unwrap();
    }

    // Signing out ends the session: the overview sends us back to sign in.
    browser.click("#logout").await;
    browser
        .wait_for_path(&base, "/login?message=signed-out")
        .await;
    browser.goto(&format!("{base}/")).await;
    browser.wait_for_path(&base, "/login").await;
    browser.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_pulls_an_image_from_the_images_page_and_an_admin_removes_it() {
    let test = "browser::an_operator_pulls_an_image_from_the_images_page_and_an_admin_removes_it";
    let Some((busybox, registry)) = crate::pull::busybox_and_registry(test) else {
        return;
    };
    let image = crate::fixtures::ImageBuilder::busybox(&busybox)
        .cmd(&["true"])
        .build();
    let layout = image.write_oci_layout(&registry.dir.path().join("layout"), "v1");
    registry.push(&layout, "v1", "wharf-test/dashboard");
    let daemon = TestDaemon::start();
    daemon.user_with_token("olga", "operator").await;
    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let base = format!("http://127.0.0.1:{}", daemon.tcp.port());
    browser.goto(&format!("{base}/login")).await;
    browser.sign_in(&base, "olga", "olga-password").await;

    browser.goto(&format!("{base}/images")).await;
    assert_eq!(browser.text("#no-images").await, "No images yet.");
    // A reference that is not there fails with the registry's reason, on the page.
    let missing = format!("{}/wharf-test/absent:v1", registry.addr);
    browser.type_into("#pull-reference", &missing).await;
    browser.click("#pull-button").await;
    let status = wait_for_text(&browser, "#pull-status", "Pull failed").await;
    assert!(status.contains(&registry.addr), "{status}");

    let reference = format!("{}/wharf-test/dashboard:v1", registry.addr);
    browser
        .eval("document.getElementById('pull-reference').value = '';")
        .await;
    browser.type_into("#pull-reference", &reference).await;
    browser.click("#pull-button").await;
    let status = wait_for_text(&browser, "#pull-status", "Pulled").await;
    assert!(status.contains(&image.manifest_digest), "{status}");
    let log = browser.text("#pull-log").await;
    assert!(
        log.contains("downloaded") && log.contains("unpacked"),
        "progress is shown as it arrives: {log}"
    );
    browser.click("#pull-refresh").await;
    let table = wait_for_text(&browser, "#images", "wharf-test/dashboard").await;
    assert!(table.contains("v1") && table.contains("linux/"), "{table}");

    // An operator may not remove images: no button. An admin may.
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('button.remove').length;")
            .await,
        json!(0)
    );
    daemon.user_with_token("ada", "admin").await;
    browser.sign_out_and_in(&base, "ada", "ada-password").await;
    browser.goto(&format!("{base}/images")).await;

    // Remove asks once more, then the name and the image go.
    browser.click("button.remove").await;
    assert_eq!(
        browser.text("button.remove").await,
        format!("Remove {}/wharf-test/dashboard:v1?", registry.addr)
    );
    browser.click("button.remove").await;
    let status = wait_for_text(&browser, "#image-status", "Removed").await;
    assert!(status.contains("the image and"), "{status}");
    let left: Value = daemon
        .unix_client()
        .get_json("/api/v1/images")
        .await
        .unwrap();
    assert_eq!(left, json!([]), "the daemon no longer has it");
    browser.goto(&format!("{base}/images")).await;
    assert_eq!(browser.text("#no-images").await, "No images yet.");
    browser.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_runs_a_container_from_the_form_follows_its_logs_and_a_viewer_only_looks() {
    let test =
        "browser::an_admin_runs_a_container_from_the_form_follows_its_logs_and_a_viewer_only_looks";
    let Some((daemon, _cleanup, browser, base)) =
        busybox_daemon_and_browser(test, &[("ada", "admin"), ("vic", "viewer")]).await
    else {
        return;
    };
    let host = daemon.host();
    let screenshot = |name: &'static str| {
        let browser = &browser;
        async move {
            let png = browser.screenshot().await;
            assert!(png.starts_with(b"\x89PNG"));
            if let Ok(dir) = std::env::var("WHARF_SCREENSHOTS") {
                std::fs::write(format!("{dir}/{name}.png"), &png).unwrap();
            }
        }
    };
    browser.goto(&format!("{base}/login")).await;
    browser.sign_in(&base, "ada", "ada-password").await;
    browser.goto(&format!("{base}/containers")).await;
    assert_eq!(browser.text("#no-containers").await, "No containers yet.");

    // The form: a container that prints, then ticks until it is stopped.
    browser.click("#new-container").await;
    browser.wait_for_path(&base, "/containers/new").await;
    browser
        .type_into("#create-image", "wharf-test/busybox:latest")
        .await;
    browser.type_into("#create-name", "ticker").await;
    browser
        .type_into(
            "#create-command",
            r#"sh -c "trap 'exit 0' TERM; echo hello-from-the-form \<b\>; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done""#,
        )
        .await;
    browser.type_into("#create-env", "GREETING=hi").await;
    browser.type_into("#create-volumes", "vol-a:/data").await;
    browser.type_into("#create-memory", "64m").await;
    browser.type_into("#create-cpus", "0.5").await;
    screenshot("container-new").await;
    browser.click("#create-button").await;
    // Its page, with its logs arriving while it runs.
    let logs = wait_for_text(&browser, "#logs", "hello-from-the-form <b>").await;
    // Lines keep arriving on the open page: ten more ticks than were there.
    let last_tick = |text: &str| {
        text.lines()
            .filter_map(|l| l.strip_prefix("tick ")?.trim().parse::<u32>().ok())
            .max()
            .unwrap_or(0)
    };
    let later = format!("tick {}\n", last_tick(&logs) + 10);
    wait_for_text(&browser, "#logs", &later).await;
    // From a time on: the stream starts again with what came since. Five minutes back is all
    // of it; one second back (an option made here) leaves out the first lines.
    let since = |value: &str| {
        format!(
            "var s = document.getElementById('log-since'); \
             if (![...s.options].some(o => o.value === '{value}')) {{ s.add(new Option('{value}', '{value}')); }} \
             s.value = '{value}'; s.dispatchEvent(new Event('change'));"
        )
    };
    browser.eval(&since("5m")).await;
    let all = wait_for_text(&browser, "#logs", "hello-from-the-form <b>").await;
    assert!(all.contains("tick 1\n"), "{all}");
    browser.eval(&since("1s")).await;
    let recent = wait_for_text(&browser, "#logs", "tick ").await;
    assert!(
        !recent.contains("hello-from-the-form") && !recent.contains("tick 1\n"),
        "only what came in the last second: {recent}"
    );
    assert_eq!(browser.text("#state").await, "running");
    let inspect: Value = serde_json::from_str(&browser.text("#inspect").await).unwrap();
    let config = &inspect["config"];
    assert_eq!(config["env"], json!(["GREETING=hi"]), "{inspect}");
    assert_eq!(config["binds"], json!(["vol-a:/data"]), "{inspect}");
    assert_eq!(config["memory"], json!(64 << 20), "{inspect}");
    assert_eq!(config["nano_cpus"], json!(500_000_000), "{inspect}");
    // Its processes (the shell and its sleep).
    assert!(browser.text("#processes").await.contains("sh -c"));
    // Its stats, live.
    wait_for_text(&browser, "#stats-now", "processes").await;
    // A terminal: a shell in the container, typed into through xterm.js.
    browser.click("#terminal-open").await;
    wait_for_text(&browser, "#terminal-state", "Connected").await;
    browser
        .type_into(
            ".xterm-helper-textarea",
            "echo term-$((6*7)) $GREETING\u{E007}",
        )
        .await;
    let screen = "var b = window.wharfTerminal.buffer.active, s = ''; \
                  for (var i = 0; i < b.length; i++) { s += b.getLine(i).translateToString(true) + '\\n'; } \
                  return s;";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = browser.eval(screen).await;
        let text = text.as_str().unwrap_or_default();
        if text.contains("term-42 hi") {
            break;
        }
        assert!(Instant::now() < deadline, "the terminal shows: {text:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    screenshot("container").await;

    // The list, filtered and searched.
    browser
        .goto(&format!("{base}/containers?state=exited"))
        .await;
    assert_eq!(browser.text("#no-match").await, "No container matches.");
    browser.goto(&format!("{base}/containers?q=tick")).await;
    let table = browser.text("#container-table").await;
    assert!(
        table.contains("ticker") && table.contains("running"),
        "{table}"
    );
    // Its memory at once; its share of a CPU from the list's next refresh on.
    let usage = browser.text("tr[data-name='ticker'] td.usage").await;
    assert!(usage.ends_with("iB"), "{usage}");
    let usage = wait_for_text(&browser, "tr[data-name='ticker'] td.usage", "%").await;
    assert!(usage.contains("% · "), "{usage}");
    screenshot("containers").await;
    // The overview counts it, and the image.
    browser.goto(&format!("{base}/")).await;
    assert_eq!(browser.text("#container-count").await, "1: 1 running");
    assert_eq!(browser.text("#image-count").await, "1");
    assert!(browser.text("#disk").await.contains(" used of "));
    screenshot("overview").await;

    // Stop the selected (all: the one), then remove it (asked once more).
    browser.goto(&format!("{base}/containers")).await;
    browser.click("#select-all").await;
    browser.click("button.bulk[data-action='stop']").await;
    wait_for_text(&browser, "#container-table", "exited").await;
    browser
        .click("tr[data-name='ticker'] button[data-action='remove']")
        .await;
    assert_eq!(
        browser
            .text("tr[data-name='ticker'] button[data-action='remove']")
            .await,
        "Remove ticker?"
    );
    browser
        .click("tr[data-name='ticker'] button[data-action='remove']")
        .await;
    wait_for_text(&browser, "main", "No containers yet.").await;

    // Volumes: made and removed from their page; networks listed (none here: the test's
    // daemon keeps its containers off the host's network).
    browser.goto(&format!("{base}/volumes")).await;
    // The form's named volume stays after its container went.
    assert!(browser.text("#volume-table").await.contains("vol-a"));
    browser
        .click("tr[data-volume='vol-a'] button.remove-volume")
        .await;
    browser
        .click("tr[data-volume='vol-a'] button.remove-volume")
        .await;
    wait_for_text(&browser, "main", "No volumes yet.").await;
    browser.type_into("#volume-name", "data-1").await;
    browser.click("#volume-create").await;
    wait_for_text(&browser, "#volume-table", "data-1").await;
    screenshot("volumes").await;
    browser
        .click("tr[data-volume='data-1'] button.remove-volume")
        .await;
    browser
        .click("tr[data-volume='data-1'] button.remove-volume")
        .await;
    wait_for_text(&browser, "main", "No volumes yet.").await;
    browser.goto(&format!("{base}/networks")).await;
    assert!(
        browser
            .text("#no-networks")
            .await
            .starts_with("No bridge network yet")
    );

    // The registry: how to push here, under the name the browser used; a repository's tags,
    // one deleted; a garbage collection preview.
    let (status, _, err) = harness::run_wharf(harness::wharf_command().args([
        "-H",
        &host,
        "tag",
        "wharf-test/busybox:latest",
        "wharf-test/extra:v2",
    ]));
    assert!(status.success(), "{err}");
    browser.goto(&format!("{base}/registry")).await;
    let registry_port = daemon.registry.unwrap().port();
    assert!(
        browser
            .text("#push-howto")
            .await
            .contains(&format!("docker login 127.0.0.1:{registry_port}")),
        "{}",
        browser.text("#push-howto").await
    );
    browser
        .click("a[href='/registry/repository?name=wharf-test/extra']")
        .await;
    let tags = wait_for_text(&browser, "#tag-table", "v2").await;
    assert!(
        tags.contains("sha256:")
            && tags.contains(&format!(
                "docker pull 127.0.0.1:{registry_port}/wharf-test/extra:v2"
            )),
        "{tags}"
    );
    screenshot("repository").await;
    browser.click("tr[data-tag='v2'] button.delete-tag").await;
    browser.click("tr[data-tag='v2'] button.delete-tag").await;
    wait_for_text(&browser, "main", "No tags").await;
    // Anonymous pull, switched on from the page.
    browser.click("#anonymous-pull").await;
    wait_for_text(
        &browser,
        "#registry-status",
        "Anonymous pull of wharf-test/extra is on.",
    )
    .await;
    let repositories: Value = daemon
        .unix_client()
        .get_json("/api/v1/registry/repositories")
        .await
        .unwrap();
    assert!(
        repositories
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "wharf-test/extra" && r["anonymous_pull"] == true),
        "{repositories}"
    );
    browser.goto(&format!("{base}/registry")).await;
    browser.click("#gc-preview").await;
    let preview = wait_for_text(&browser, "#gc-status", "Would free").await;
    assert!(preview.contains("blobs"), "{preview}");
    screenshot("registry").await;

    // An image's page: its history and configuration, another name, and "Run" into the form.
    browser.goto(&format!("{base}/images")).await;
    browser
        .click("a.image-link[href^='/images/detail?name=wharf-test/busybox']")
        .await;
    let history = wait_for_text(&browser, "#history", "sha256:").await;
    assert!(
        history.contains("KiB") || history.contains("MiB"),
        "{history}"
    );
    assert!(browser.text("#image-config").await.contains("\"Cmd\""));
    browser
        .type_into("#tag-target", "wharf-test/renamed:v3")
        .await;
    browser.click("#tag-button").await;
    wait_for_text(&browser, "#image-status", "Tagged wharf-test/renamed:v3").await;
    screenshot("image").await;
    browser.click("#run-image").await;
    wait_for_text(&browser, "h1", "Create container").await;
    assert_eq!(
        browser
            .eval("return document.getElementById('create-image').value;")
            .await,
        json!("wharf-test/busybox:latest")
    );

    // Users: a robot with registry grants and a person, made; the person removed.
    browser.goto(&format!("{base}/users")).await;
    let users = browser.text("#user-table").await;
    assert!(users.contains("ada") && users.contains("vic"), "{users}");
    browser.type_into("#user-name", "ci-bot").await;
    browser
        .eval("var k = document.getElementById('user-kind'); k.value = 'robot'; k.dispatchEvent(new Event('change'));")
        .await;
    browser
        .type_into("#user-password", "robot-password-1")
        .await;
    browser.type_into("#user-grants", "team/** pull,push").await;
    browser.click("#user-create").await;
    wait_for_text(&browser, "#user-table", "team/** (pull, push)").await;
    browser.type_into("#user-name", "newbie").await;
    browser
        .eval("document.getElementById('user-role').value = 'operator';")
        .await;
    browser
        .type_into("#user-password", "newbie-password-1")
        .await;
    browser.click("#user-create").await;
    let users = wait_for_text(&browser, "#user-table", "newbie").await;
    assert!(users.contains("operator"), "{users}");
    screenshot("users").await;
    browser
        .click("tr[data-user='newbie'] button.remove-user")
        .await;
    browser
        .click("tr[data-user='newbie'] button.remove-user")
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_text(&browser, "#user-table").await.contains("newbie") {
        assert!(Instant::now() < deadline, "newbie was not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A viewer sees containers but no action, and the API refuses one sent anyway.
    let created: Value = daemon
        .unix_client()
        .send_json(
            Method::POST,
            "/api/v1/containers",
            &json!({"name": "shown", "image": "wharf-test/busybox:latest", "cmd": ["echo", "<script>x</script>"]}),
        )
        .await
        .unwrap();
    browser.sign_out_and_in(&base, "vic", "vic-password").await;
    browser.goto(&format!("{base}/containers")).await;
    assert!(browser.text("#container-table").await.contains("shown"));
    // The rows refresh themselves (htmx): a container made meanwhile appears without a reload.
    browser
        .eval("document.body.dataset.marker = 'same-page';")
        .await;
    let _: Value = daemon
        .unix_client()
        .send_json(
            Method::POST,
            "/api/v1/containers",
            &json!({"name": "later-one", "image": "wharf-test/busybox:latest", "cmd": ["true"]}),
        )
        .await
        .unwrap();
    wait_for_text(&browser, "#container-table", "later-one").await;
    assert_eq!(
        browser.eval("return document.body.dataset.marker;").await,
        json!("same-page"),
        "not reloaded"
    );
    let buttons = browser
        .eval("return document.querySelectorAll('main button, #new-container').length;")
        .await;
    assert_eq!(buttons, json!(1), "only the filter's button");
    let refused = browser
        .eval(&format!(
            "var x = new XMLHttpRequest(); x.open('POST', '/api/v1/containers/{}/start', false); \
             x.setRequestHeader('X-CSRF-Token', document.getElementById('containers').dataset.csrf); \
             x.send(); return x.status + ' ' + x.responseText;",
            created["id"].as_str().unwrap()
        ))
        .await;
    // Refused for the right, not for the token: the page's token is good.
    let refused = refused.as_str().unwrap_or_default();
    assert!(
        refused.starts_with("403 ") && refused.contains("container.operate"),
        "{refused}"
    );
    // The Users page is for admins.
    browser.goto(&format!("{base}/users")).await;
    assert!(browser.text("main").await.contains("user.manage"));
    // What a container was given is shown as text, never as markup.
    browser
        .goto(&format!(
            "{base}/containers/{}",
            created["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(browser.text("#state").await, "created");
    assert!(
        browser
            .text("main")
            .await
            .contains("echo <script>x</script>")
    );
    assert_eq!(
        browser
            .eval("return Array.from(document.scripts).filter(function (s) { return !s.src; }).length;")
            .await,
        json!(0),
        "no script but the page's own files"
    );
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('main button').length;")
            .await,
        json!(0),
        "no action (and no logs: they take an operator)"
    );

    // An admin prunes the images no container uses, once the containers are gone.
    harness::remove_all_containers(&host);
    browser.sign_out_and_in(&base, "ada", "ada-password").await;
    browser.goto(&format!("{base}/images")).await;
    browser.click("#prune-unused").await;
    browser.click("#prune-unused").await;
    let pruned = wait_for_text(&browser, "#image-status", "Removed").await;
    assert!(pruned.starts_with("Removed 1 images"), "{pruned}");
    browser.click("#prune-refresh").await;
    wait_for_text(&browser, "main", "No images yet.").await;
    browser.close();
}

/// A daemon with the busybox fixture and `users` (name, role; the password is
/// `NAME-password`), whose containers go when the test ends, and a browser; the dashboard's
/// base URL. `None` after a recorded skip.
async fn busybox_daemon_and_browser(
    test: &str,
    users: &[(&str, &str)],
) -> Option<(TestDaemon, harness::RemoveContainers, Browser, String)> {
    if harness::skip_unless_root(test) {
        return None;
    }
    let busybox = crate::fixtures::busybox(test)?;
    let daemon = TestDaemon::start();
    let cleanup = harness::RemoveContainers(daemon.host());
    daemon.load_busybox(&busybox);
    for (name, role) in users {
        daemon.user_with_token(name, role).await;
    }
    let browser = Browser::start(test).await?;
    let base = format!("http://127.0.0.1:{}", daemon.tcp.port());
    Some((daemon, cleanup, browser, base))
}

/// The element's text, read in one script, so a page reloading meanwhile (after an action)
/// reads as empty instead of failing on an element that went away.
async fn read_text(browser: &Browser, css: &str) -> String {
    let read = format!(
        "var e = document.querySelector({}); return e ? e.innerText : '';",
        serde_json::to_string(css).unwrap()
    );
    browser.eval(&read).await.as_str().unwrap_or("").to_owned()
}

/// Waits up to 30 s for the element's text to contain `wanted`, and returns it.
async fn wait_for_text(browser: &Browser, css: &str, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = read_text(browser, css).await;
        if text.contains(wanted) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed {wanted:?}: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_builds_an_image_from_a_pasted_dockerfile_and_watches_the_log() {
    let test = "browser::an_admin_builds_an_image_from_a_pasted_dockerfile_and_watches_the_log";
    let Some((daemon, _cleanup, browser, base)) =
        busybox_daemon_and_browser(test, &[("ada", "admin"), ("olga", "operator")]).await
    else {
        return;
    };
    let host = daemon.host();
    browser.goto(&format!("{base}/login")).await;
    browser.sign_in(&base, "ada", "ada-password").await;
    browser.goto(&format!("{base}/images")).await;
    browser.click("#build-link").await;
    browser.wait_for_path(&base, "/images/build").await;

    // A Dockerfile pasted in: the page makes the context, the log streams in.
    let dockerfile = "FROM wharf-test/busybox:latest\nARG WHO=nobody\nRUN echo \"hello from the browser, $WHO\" | tee /hello\nCMD [\"cat\", \"/hello\"]\n";
    browser
        .eval(&format!(
            "document.getElementById('build-dockerfile').value = {}; \
             document.getElementById('build-args').value = 'WHO=ada';",
            serde_json::to_string(dockerfile).unwrap()
        ))
        .await;
    browser
        .type_into("#build-tag", "wharf-test/from-browser:v1")
        .await;
    browser.click("#build-button").await;
    let status = wait_for_text(&browser, "#build-status", "Built sha256:").await;
    assert!(
        status.contains("0 of 1 layer steps from the cache"),
        "{status}"
    );
    let log = browser.text("#build-log").await;
    assert!(log.contains("Step 3/4 : RUN"), "{log}");
    assert!(
        log.contains("hello from the browser, ada"),
        "the step's output: {log}"
    );
    assert!(
        log.contains("Successfully tagged wharf-test/from-browser:v1"),
        "{log}"
    );
    let (status, out, err) = harness::run_wharf(harness::wharf_command().args([
        "-H",
        &host,
        "run",
        "--rm",
        "wharf-test/from-browser:v1",
    ]));
    assert!(status.success(), "{err}");
    assert_eq!(out, "hello from the browser, ada\n");

    // Built again: from the cache; a broken Dockerfile: the reason, with its line.
    browser.click("#build-button").await;
    wait_for_text(
        &browser,
        "#build-status",
        "1 of 1 layer steps from the cache",
    )
    .await;
    browser
        .eval("document.getElementById('build-dockerfile').value = 'FROM wharf-test/busybox:latest\\nBOGUS thing\\n';")
        .await;
    browser.click("#build-button").await;
    let status = wait_for_text(&browser, "#build-status", "The build failed").await;
    assert!(
        status.contains("Dockerfile line 2: unknown instruction: BOGUS"),
        "{status}"
    );

    // An operator may not build: no link, and the page says so.
    browser
        .sign_out_and_in(&base, "olga", "olga-password")
        .await;
    browser.goto(&format!("{base}/images")).await;
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('#build-link').length;")
            .await,
        json!(0)
    );
    browser.goto(&format!("{base}/images/build")).await;
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('#build-form').length;")
            .await,
        json!(0)
    );
    browser.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_push_appears_on_the_registry_page_with_its_pulls_layers_and_deletion() {
    let test =
        "browser::a_docker_push_appears_on_the_registry_page_with_its_pulls_layers_and_deletion";
    let Some(busybox) = crate::fixtures::busybox(test) else {
        return;
    };
    let Some(docker) = crate::dockerd::Dockerd::start(test, json!({})) else {
        return;
    };
    let daemon = TestDaemon::start();
    daemon.user_with_token("pusher", "operator").await;
    daemon.user_with_token("ada", "admin").await;
    let addr = daemon.registry.unwrap().to_string();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("img.tar");
    crate::fixtures::ImageBuilder::busybox(&busybox)
        .layer(
            crate::fixtures::LayerBuilder::new()
                .file("shown", 0o644, b"on the registry page\n")
                .finish(),
            "COPY shown /",
        )
        .cmd(&["cat", "/shown"])
        .build()
        .write_docker_archive(&archive, "wharf-test/shown:v1");
    let ok = harness::succeeded;
    ok(
        docker.docker(&["load", "-i", archive.to_str().unwrap()]),
        "load",
    );
    let name = format!("{addr}/team/shown:v1");
    ok(docker.docker(&["tag", "wharf-test/shown:v1", &name]), "tag");
    ok(
        docker.docker(&["login", &addr, "-u", "pusher", "-p", "pusher-password"]),
        "login",
    );
    ok(docker.docker(&["push", &name]), "push");

    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let base = format!("http://127.0.0.1:{}", daemon.tcp.port());
    browser.goto(&format!("{base}/login")).await;
    browser.sign_in(&base, "ada", "ada-password").await;
    browser.goto(&format!("{base}/registry")).await;
    wait_for_text(&browser, "main", "team/shown").await;
    browser
        .click("a[href^='/registry/repository?name=team']")
        .await;
    let row = wait_for_text(&browser, "#tag-table tbody", "v1").await;
    assert!(row.contains("sha256:"), "{row}");
    assert_eq!(browser.text("#tag-table td.pulls").await, "0");

    // A pull through the registry is counted.
    ok(docker.docker(&["rmi", &name, "wharf-test/shown:v1"]), "rmi");
    ok(docker.docker(&["pull", &name]), "pull");
    browser.eval("window.location.reload();").await;
    let pulls = wait_for_text(&browser, "#tag-table td.pulls", "1 (last").await;
    assert!(pulls.starts_with("1 (last"), "{pulls}");

    // The manifest's page: its config and layers, the document, then deletion.
    browser.click("a.manifest-link").await;
    wait_for_text(&browser, "#manifest-digest", "sha256:").await;
    let layers = browser.text("#layer-table tbody").await;
    assert_eq!(
        layers.lines().count(),
        3,
        "the config and two layers: {layers}"
    );
    assert!(layers.contains("application/vnd"), "{layers}");
    assert!(
        browser
            .text("#manifest-json")
            .await
            .contains("\"schemaVersion\": 2"),
        "the document as stored"
    );
    assert_eq!(browser.text("#manifest-tags").await, "v1");
    browser.click("#delete-manifest").await;
    assert_eq!(
        browser.text("#delete-manifest").await,
        "Delete this manifest and its tags here?"
    );
    browser.click("#delete-manifest").await;
    wait_for_text(&browser, "main", "No tags").await;
    let out = docker.docker(&["pull", &name]);
    assert!(!out.status.success(), "the deleted manifest is not pulled");

    // At a phone's width every page fits: nothing scrolls the page sideways (wide tables
    // scroll within themselves), and the navigation stays on screen.
    browser.resize(390, 844).await;
    for path in [
        "/",
        "/containers",
        "/containers/new",
        "/images",
        "/images/build",
        "/registry",
        "/registry/repository?name=team/shown",
        "/volumes",
        "/networks",
        "/users",
        "/audit",
        "/settings",
        "/account",
    ] {
        browser.goto(&format!("{base}{path}")).await;
        browser.find("nav").await;
        let sizes = browser
            .eval(
                "return [document.documentElement.scrollWidth, window.innerWidth, \
                 document.querySelector('nav a:last-child').getBoundingClientRect().right];",
            )
            .await;
        let (scroll, inner, nav_right) = (
            sizes[0].as_f64().unwrap(),
            sizes[1].as_f64().unwrap(),
            sizes[2].as_f64().unwrap(),
        );
        assert!(inner <= 400.0, "the window is a phone's: {inner}");
        assert!(
            scroll <= inner + 1.0,
            "{path} scrolls sideways at {inner}px: {scroll}px wide"
        );
        assert!(
            nav_right <= inner + 1.0,
            "{path}: the navigation runs off to {nav_right}px"
        );
        let png = browser.screenshot().await;
        if let Ok(dir) = std::env::var("WHARF_SCREENSHOTS") {
            let file = format!("phone{}.png", path.replace(['/', '?', '='], "-"));
            std::fs::write(format!("{dir}/{file}"), &png).unwrap();
        }
    }
    browser.close();
}

/// Relays connections to a TCP port on this host's loopback to a unix socket: how the browser
/// reaches a daemon that lives in a network namespace of the test's own.
struct UnixRelay {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl UnixRelay {
    fn to(socket: &std::path::Path) -> UnixRelay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (socket, stopped) = (socket.to_owned(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let (Ok(client), Ok(daemon)) =
                    (client, std::os::unix::net::UnixStream::connect(&socket))
                else {
                    continue;
                };
                let (mut client_in, mut daemon_in) =
                    (client.try_clone().unwrap(), daemon.try_clone().unwrap());
                let (mut client_out, mut daemon_out) = (client, daemon);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_in, &mut daemon_out);
                    let _ = daemon_out.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut daemon_in, &mut client_out);
                    let _ = client_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        UnixRelay { port, stop }
    }
}

impl Drop for UnixRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Networks are made and removed from their page. Making one makes a bridge, so the daemon
/// runs in a network namespace of the test's own and the browser reaches it through its unix
/// socket (relayed from a port on this host's loopback).
#[tokio::test(flavor = "multi_thread")]
async fn networks_are_made_and_removed_from_their_page() {
    let test = "browser::networks_are_made_and_removed_from_their_page";
    if harness::skip_unless_root(test) {
        return;
    }
    if harness::skip_unless_installed(test, "/usr/sbin/nft", "nftables") {
        return;
    }
    let netns = harness::Netns::new();
    let daemon = harness::DaemonProcess::start_in(&netns);
    let (status, _, err) = harness::run_wharf_input(
        harness::wharf_command().args([
            "-H",
            &daemon.host(),
            "user",
            "add",
            "nina",
            "--role",
            "admin",
            "--password-stdin",
        ]),
        "network admin password\n",
    );
    assert!(status.success(), "{err}");
    let relay = UnixRelay::to(&daemon.socket);
    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let base = format!("http://127.0.0.1:{}", relay.port);
    browser.goto(&format!("{base}/login")).await;
    browser
        .sign_in(&base, "nina", "network admin password")
        .await;

    browser.goto(&format!("{base}/networks")).await;
    browser.type_into("#network-name", "web-net").await;
    browser.type_into("#network-subnet", "10.77.3.0/24").await;
    browser.click("#network-create").await;
    let table = wait_for_text(&browser, "#network-table", "web-net").await;
    assert!(
        table.contains("10.77.3.0/24") && table.contains("10.77.3.1"),
        "{table}"
    );
    let (_, out, _) = daemon.wharf(&["network", "ls"]);
    assert!(out.contains("web-net"), "{out}");

    // An overlapping subnet is refused, with the reason on the page.
    browser.type_into("#network-name", "other-net").await;
    browser.type_into("#network-subnet", "10.77.3.128/25").await;
    browser.click("#network-create").await;
    let said = wait_for_text(&browser, "#container-status", "Could not create network").await;
    assert!(said.contains("overlaps 10.77.3.0/24"), "{said}");

    // Removed (asked once more); the bridge goes with it.
    browser
        .click("tr[data-network='web-net'] button.remove-item")
        .await;
    browser
        .click("tr[data-network='web-net'] button.remove-item")
        .await;
    wait_for_text(&browser, "main", "No bridge network yet").await;
    let (_, out, _) = daemon.wharf(&["network", "ls"]);
    assert!(!out.contains("web-net"), "{out}");
}

/// A script's `all`: the page's visible controls that take the keyboard's focus.
const FOCUSABLE: &str = r#"
    var all = Array.from(document.querySelectorAll(
        'a[href], button:not([disabled]), input:not([type=hidden]):not([disabled]), ' +
        'select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])'))
        .filter(function (e) { return e.getClientRects().length > 0; });"#;

/// What the keyboard's focus is on: its index among the page's visible focusable controls (-1:
/// none of them), its id, and whether it shows a focus ring.
async fn focus(browser: &Browser) -> (i64, String, bool) {
    let script = FOCUSABLE.to_owned()
        + r#"
        var e = document.activeElement;
        var style = e ? getComputedStyle(e) : null;
        return [all.indexOf(e), e && e.id ? e.id : (e ? e.tagName : ''),
                !!style && style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0,
                all.length];"#;
    let v = browser.eval(&script).await;
    (
        v[0].as_i64().unwrap(),
        v[1].as_str().unwrap_or("").to_owned(),
        v[2].as_bool().unwrap(),
    )
}

/// The dashboard works from the keyboard: signing in with Enter, a skip link first on each
/// page, every control reachable with Tab and showing a focus ring, and buttons that act on
/// Enter, a confirmation's second press included.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_works_from_the_keyboard() {
    let test = "browser::the_dashboard_works_from_the_keyboard";
    let Some((daemon, _cleanup, browser, base)) =
        busybox_daemon_and_browser(test, &[("kai", "admin")]).await
    else {
        return;
    };
    let host = daemon.host();
    let (status, _, err) = harness::run_wharf(harness::wharf_command().args([
        "-H",
        &host,
        "run",
        "-d",
        "--name",
        "keys",
        "wharf-test/busybox:latest",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do sleep 0.2; done",
    ]));
    assert!(status.success(), "{err}");

    // Signing in: the user name field has the focus, Tab goes on to the password, Enter sends.
    browser.goto(&format!("{base}/login")).await;
    browser.type_into("#username", "kai").await;
    browser.press(TAB).await;
    assert_eq!(focus(&browser).await.1, "password");
    browser.type_into("#password", "kai-password").await;
    browser.press(ENTER).await;
    browser.wait_for_path(&base, "/").await;

    for page in [
        "/",
        "/containers",
        "/images",
        "/volumes",
        "/networks",
        "/users",
    ] {
        browser.goto(&format!("{base}{page}")).await;
        // The first Tab reaches the skip link, and Enter on it moves past the header.
        browser.press(TAB).await;
        assert_eq!(focus(&browser).await.1, "skip", "{page}");
        browser.press(ENTER).await;
        assert_eq!(focus(&browser).await.1, "content", "{page}");
        // From there Tab visits every control of the page, each with a visible ring, and
        // comes round to the start.
        browser.goto(&format!("{base}{page}")).await;
        let total = browser
            .eval(&format!("{FOCUSABLE} return all.length;"))
            .await
            .as_i64()
            .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..total + 5 {
            browser.press(TAB).await;
            let (index, id, ring) = focus(&browser).await;
            if index < 0 {
                // Past the last control, the browser's own UI has the focus for a moment.
                continue;
            }
            assert!(ring, "{page}: {id} (control {index}) shows no focus ring");
            seen.insert(index);
        }
        assert_eq!(
            seen.len() as i64,
            total,
            "{page}: Tab reached {seen:?} of {total} controls"
        );
    }

    // On the containers page: Tab to the row's Stop, Enter stops it; Remove asks, and a second
    // Enter removes it.
    browser.goto(&format!("{base}/containers")).await;
    let to = |selector: &'static str| {
        let browser = &browser;
        async move {
            for _ in 0..60 {
                browser.press(TAB).await;
                let on = browser
                    .eval(&format!(
                        "return document.activeElement === document.querySelector({});",
                        serde_json::to_string(selector).unwrap()
                    ))
                    .await;
                if on.as_bool() == Some(true) {
                    return;
                }
            }
            panic!("Tab never reached {selector}");
        }
    };
    to("tr[data-name='keys'] button[data-action='stop']").await;
    browser.press(ENTER).await;
    wait_for_text(&browser, "tr[data-name='keys']", "Exited").await;
    to("tr[data-name='keys'] button[data-action='remove']").await;
    browser.press(ENTER).await;
    assert_eq!(
        browser
            .eval("return document.activeElement.dataset.armed || '';")
            .await,
        "yes",
        "the first Enter asks"
    );
    browser.press(ENTER).await;
    wait_for_text(&browser, "main", "No containers yet.").await;
}

/// An image is pushed to another registry from its page, with the layers' progress shown and
/// the other host holding it afterwards; a name without a registry is refused with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn an_image_is_pushed_from_its_page_with_progress() {
    let test = "browser::an_image_is_pushed_from_its_page_with_progress";
    let Some((daemon, _cleanup, browser, base)) =
        busybox_daemon_and_browser(test, &[("pia", "admin")]).await
    else {
        return;
    };
    let other = TestDaemon::start();
    other.user_with_token("pusher", "operator").await;
    let addr = other.registry.unwrap().to_string();
    let (status, _, err) = harness::run_wharf_input(
        harness::wharf_command()
            .args(["-H", &daemon.host(), "login", &addr, "-u", "pusher"])
            .arg("--password-stdin"),
        "pusher-password\n",
    );
    assert!(status.success(), "{err}");

    browser.goto(&format!("{base}/login")).await;
    browser.sign_in(&base, "pia", "pia-password").await;
    browser
        .goto(&format!(
            "{base}/images/detail?name=wharf-test%2Fbusybox%3Alatest"
        ))
        .await;
    browser
        .type_into("#push-reference", "team/elsewhere:v1")
        .await;
    browser.click("#push-button").await;
    let said = wait_for_text(&browser, "#push-status", "Push failed").await;
    assert!(said.contains("names no registry"), "{said}");

    let remote = format!("{addr}/team/box:v1");
    browser
        .eval("document.getElementById('push-reference').value = ''; return null;")
        .await;
    browser.type_into("#push-reference", &remote).await;
    browser.click("#push-button").await;
    let said = wait_for_text(&browser, "#push-status", "Pushed").await;
    assert!(said.contains(&remote) && said.contains("sha256:"), "{said}");
    let log = browser.text("#push-log").await;
    assert_eq!(
        log.matches("pushed ").count(),
        2,
        "the layer and the config: {log}"
    );
    let (status, out, err) =
        harness::run_wharf(harness::wharf_command().args(["-H", &other.host(), "images"]));
    assert!(status.success(), "{err}");
    assert!(out.contains("team/box"), "{out}");
}
