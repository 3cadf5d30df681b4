//! The built-in registry, over HTTP as the distribution spec describes it (a port of the spec's
//! conformance checks: pull, push, content discovery, content management), and with real
//! clients (skopeo, docker).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fixtures::{self, ImageBuilder};
use crate::harness::{self, TestDaemon};

/// A registry client: base URL and credentials.
struct Reg {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
}

impl Reg {
    fn new(daemon: &TestDaemon, auth: Option<(&str, &str)>) -> Reg {
        Reg {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: format!("http://{}", daemon.registry.expect("registry on")),
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let r = self.http.request(method, url);
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> reqwest::Response {
        self.req(method, path).body(body).send().await.unwrap()
    }
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn error_codes(r: reqwest::Response) -> Vec<String> {
    let body: Value = r.json().await.unwrap();
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("a spec error body: {body}"))
        .iter()
        .map(|e| e["code"].as_str().unwrap().to_owned())
        .collect()
}

fn digest_of(bytes: &[u8]) -> String {
    fixtures::sha256_digest(bytes)
}

/// Monolithic upload (POST ?digest=); returns the response.
async fn upload(reg: &Reg, repo: &str, bytes: &[u8]) -> reqwest::Response {
    let digest = digest_of(bytes);
    reg.send(
        reqwest::Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        bytes.to_vec(),
    )
    .await
}

/// An OCI image manifest of `config` and `layers` (blobs of any bytes).
fn manifest(config: &[u8], layers: &[&[u8]], extra: Value) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config), "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest_of(l), "size": l.len()})).collect::<Vec<_>>(),
    });
    if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_vec(&m).unwrap()
}

async fn put_manifest(reg: &Reg, repo: &str, reference: &str, bytes: &[u8]) -> reqwest::Response {
    reg.req(
        reqwest::Method::PUT,
        &format!("/v2/{repo}/manifests/{reference}"),
    )
    .header("content-type", "application/vnd.oci.image.manifest.v1+json")
    .body(bytes.to_vec())
    .send()
    .await
    .unwrap()
}

#[tokio::test]
async fn auth_challenges_and_the_token_flow() {
    if harness::skip_unless_root("registry::auth_challenges_and_the_token_flow") {
        return;
    }
    let daemon = TestDaemon::start();
    daemon.user_with_token("pusher", "operator").await;
    let anonymous = Reg::new(&daemon, None);
    let r = anonymous.send(reqwest::Method::GET, "/v2/", vec![]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = header(&r, "www-authenticate");
    let realm = format!("http://{}/v2/token", daemon.registry.unwrap());
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{realm}\",service=\"wharf\"")),
        "{challenge}"
    );
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_eq!(error_codes(r).await, ["UNAUTHORIZED"]);

    // Anonymous push is refused with the scope to ask a token for.
    let r = upload(&anonymous, "team/app", b"hello").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        header(&r, "www-authenticate").contains("scope=\"repository:team/app:pull,push\""),
        "{}",
        header(&r, "www-authenticate")
    );

    let basic = Reg::new(&daemon, Some(("pusher", "pusher-password")));
    let r = basic.send(reqwest::Method::GET, "/v2/", vec![]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let wrong = Reg::new(&daemon, Some(("pusher", "wrong")));
    let r = wrong.send(reqwest::Method::GET, "/v2/", vec![]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The token endpoint grants the intersection of the scope and the account's rights: an
    // operator may pull and push, not delete.
    let r = basic
        .req(reqwest::Method::GET, &realm)
        .query(&[
            ("service", "wharf"),
            ("scope", "repository:team/app:pull,push,delete"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token: Value = r.json().await.unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let r = wrong
        .req(reqwest::Method::GET, &realm)
        .query(&[("service", "wharf"), ("scope", "repository:team/app:pull")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a wrong password gets no token"
    );

    let bearer = |method, path: &str| {
        anonymous
            .req(method, path)
            .header("authorization", format!("Bearer {token}"))
    };
    let blob = b"pushed with a token".to_vec();
    let r = bearer(
        reqwest::Method::POST,
        &format!("/v2/team/app/blobs/uploads/?digest={}", digest_of(&blob)),
    )
    .body(blob.clone())
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = bearer(
        reqwest::Method::DELETE,
        &format!("/v2/team/app/blobs/{}", digest_of(&blob)),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "delete was not granted"
    );
    assert!(header(&r, "www-authenticate").contains("insufficient_scope"));
    let r = bearer(
        reqwest::Method::GET,
        &format!("/v2/team/other/blobs/{}", digest_of(&blob)),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the token is for team/app only"
    );
    let r = anonymous
        .req(reqwest::Method::GET, "/v2/")
        .header("authorization", "Bearer forged.token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Failed logins are throttled like every sign-in: after a few, even the right password
    // waits, and the client is told so.
    let mut throttled = None;
    for _ in 0..10 {
        let r = wrong.send(reqwest::Method::GET, "/v2/", vec![]).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(r);
            break;
        }
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = throttled.expect("wrong passwords get throttled");
    assert_eq!(error_codes(r).await, ["TOOMANYREQUESTS"]);
    let r = basic.send(reqwest::Method::GET, "/v2/", vec![]).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the account is blocked for now"
    );
}

#[tokio::test]
async fn blobs_upload_in_every_mode_and_bad_digests_leave_nothing() {
    if harness::skip_unless_root(
        "registry::blobs_upload_in_every_mode_and_bad_digests_leave_nothing",
    ) {
        return;
    }
    let daemon = TestDaemon::start();
    daemon.user_with_token("pusher", "admin").await;
    let reg = Reg::new(&daemon, Some(("pusher", "pusher-password")));
    let repo = "conf/app";
    let head = |digest: String| {
        let reg = &reg;
        async move {
            reg.send(
                reqwest::Method::HEAD,
                &format!("/v2/{repo}/blobs/{digest}"),
                vec![],
            )
            .await
            .status()
        }
    };

    // Monolithic, then reads: HEAD, GET, Range.
    let data = b"0123456789abcdef".to_vec();
    let r = upload(&reg, repo, &data).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "location"),
        format!("/v2/{repo}/blobs/{}", digest_of(&data))
    );
    assert_eq!(header(&r, "docker-content-digest"), digest_of(&data));
    let r = reg
        .send(
            reqwest::Method::HEAD,
            &format!("/v2/{repo}/blobs/{}", digest_of(&data)),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "16");
    assert_eq!(header(&r, "docker-content-digest"), digest_of(&data));
    let r = reg
        .req(
            reqwest::Method::GET,
            &format!("/v2/{repo}/blobs/{}", digest_of(&data)),
        )
        .header("range", "bytes=2-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), "bytes 2-5/16");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"2345");
    let r = reg
        .req(
            reqwest::Method::GET,
            &format!("/v2/{repo}/blobs/{}", digest_of(&data)),
        )
        .header("range", "bytes=99-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // A wrong digest, monolithic: 400 DIGEST_INVALID, nothing stored.
    let wrong = digest_of(b"something else");
    let r = reg
        .send(
            reqwest::Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={wrong}"),
            b"not that".to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_codes(r).await, ["DIGEST_INVALID"]);
    assert_eq!(head(wrong.clone()).await, StatusCode::NOT_FOUND);
    assert_eq!(head(digest_of(b"not that")).await, StatusCode::NOT_FOUND);

    // POST then PUT with the body.
    let two = b"post then put".to_vec();
    let r = reg
        .send(
            reqwest::Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = header(&r, "location");
    assert!(location.starts_with(&format!("/v2/{repo}/blobs/uploads/")));
    let r = reg
        .send(
            reqwest::Method::PUT,
            &format!("{location}?digest={}", digest_of(&two)),
            two.clone(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(head(digest_of(&two)).await, StatusCode::OK);

    // Chunked, in order; a repeated chunk gets 416; GET of the session tells where it stands.
    let chunked = b"first-second".to_vec();
    let r = reg
        .send(
            reqwest::Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            vec![],
        )
        .await;
    let location = header(&r, "location");
    let patch = |range: &'static str, bytes: &'static [u8]| {
        let (reg, location) = (&reg, location.clone());
        async move {
            reg.req(reqwest::Method::PATCH, &location)
                .header("content-range", range)
                .header("content-type", "application/octet-stream")
                .body(bytes.to_vec())
                .send()
                .await
                .unwrap()
        }
    };
    let r = patch("0-5", b"first-").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-5");
    let r = patch("0-5", b"first-").await;
    assert_eq!(
        r.status(),
        StatusCode::RANGE_NOT_SATISFIABLE,
        "a repeated chunk"
    );
    let r = patch("9-14", b"second").await;
    assert_eq!(
        r.status(),
        StatusCode::RANGE_NOT_SATISFIABLE,
        "a chunk out of order"
    );
    let r = reg.send(reqwest::Method::GET, &location, vec![]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-5");
    assert_eq!(header(&r, "location"), location);
    let r = patch("6-11", b"second").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .send(
            reqwest::Method::PUT,
            &format!("{location}?digest={}", digest_of(&chunked)),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(head(digest_of(&chunked)).await, StatusCode::OK);

    // Chunked with a wrong digest at the end: 400, and the session is gone.
    let r = reg
        .send(
            reqwest::Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            vec![],
        )
        .await;
    let location = header(&r, "location");
    reg.send(reqwest::Method::PATCH, &location, b"abc".to_vec())
        .await;
    let r = reg
        .send(
            reqwest::Method::PUT,
            &format!("{location}?digest={wrong}"),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_codes(r).await, ["DIGEST_INVALID"]);
    let r = reg.send(reqwest::Method::GET, &location, vec![]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_codes(r).await, ["BLOB_UPLOAD_UNKNOWN"]);

    // Streamed: one PATCH without Content-Range, then PUT with the digest (docker push does so).
    let streamed = vec![7u8; 3 << 20];
    let r = reg
        .send(
            reqwest::Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            vec![],
        )
        .await;
    let location = header(&r, "location");
    let r = reg
        .send(reqwest::Method::PATCH, &location, streamed.clone())
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), format!("0-{}", streamed.len() - 1));
    let r = reg
        .send(
            reqwest::Method::PUT,
            &format!("{location}?digest={}", digest_of(&streamed)),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Cancel.
    let r = reg
        .send(
            reqwest::Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            vec![],
        )
        .await;
    let location = header(&r, "location");
    let r = reg.send(reqwest::Method::DELETE, &location, vec![]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = reg.send(reqwest::Method::GET, &location, vec![]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let uploads = daemon.data_root.join("uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads).unwrap().collect();
    assert!(left.is_empty(), "no upload directories left: {left:?}");

    // Cross-repository mount; a mount of a blob the source lacks starts an upload instead.
    let r = reg
        .send(
            reqwest::Method::POST,
            &format!(
                "/v2/conf/other/blobs/uploads/?mount={}&from={repo}",
                digest_of(&data)
            ),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "location"),
        format!("/v2/conf/other/blobs/{}", digest_of(&data))
    );
    let r = reg
        .send(
            reqwest::Method::POST,
            &format!("/v2/conf/third/blobs/uploads/?mount={wrong}&from={repo}"),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // A blob is only served through a repository that holds it.
    let r = reg
        .send(
            reqwest::Method::HEAD,
            &format!("/v2/conf/third/blobs/{}", digest_of(&data)),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Delete a blob from a repository.
    let r = reg
        .send(
            reqwest::Method::DELETE,
            &format!("/v2/conf/other/blobs/{}", digest_of(&data)),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .send(
            reqwest::Method::HEAD,
            &format!("/v2/conf/other/blobs/{}", digest_of(&data)),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Names out of the grammar.
    let r = upload(&reg, "Conf/App", b"x").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_codes(r).await, ["NAME_INVALID"]);
}

#[tokio::test]
async fn manifests_tags_catalog_and_referrers() {
    if harness::skip_unless_root("registry::manifests_tags_catalog_and_referrers") {
        return;
    }
    let daemon = TestDaemon::start();
    daemon.user_with_token("pusher", "admin").await;
    let reg = Reg::new(&daemon, Some(("pusher", "pusher-password")));
    let repo = "conf/app";
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = b"not really a layer".to_vec();
    assert_eq!(
        upload(&reg, repo, config).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        upload(&reg, repo, &layer).await.status(),
        StatusCode::CREATED
    );

    // Missing blobs: one MANIFEST_BLOB_UNKNOWN per missing descriptor.
    let missing = manifest(b"no such config", &[b"no such layer"], json!({}));
    let r = put_manifest(&reg, repo, "broken", &missing).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_codes(r).await,
        ["MANIFEST_BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"]
    );

    let image = manifest(config, &[&layer], json!({}));
    let image_digest = digest_of(&image);
    let r = put_manifest(&reg, repo, "v1", &image).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), image_digest);
    assert_eq!(
        header(&r, "location"),
        format!("/v2/{repo}/manifests/{image_digest}")
    );
    for reference in ["v1", image_digest.as_str()] {
        let r = reg
            .send(
                reqwest::Method::GET,
                &format!("/v2/{repo}/manifests/{reference}"),
                vec![],
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "content-type"),
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(header(&r, "docker-content-digest"), image_digest);
        assert_eq!(r.bytes().await.unwrap().as_ref(), image.as_slice());
    }
    // By digest, the digest must match.
    let r = put_manifest(&reg, repo, &digest_of(b"other"), &image).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_codes(r).await, ["DIGEST_INVALID"]);
    // Too big: 413 without reading it all.
    let mut big = br#"{"schemaVersion": 2, "annotations": {"x": ""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 5 << 20));
    let r = put_manifest(&reg, repo, "big", &big).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_codes(r).await, ["SIZE_INVALID"]);
    // The daemon answered before reading the rest and closed that connection: a fresh client.
    let reg = Reg::new(&daemon, Some(("pusher", "pusher-password")));
    let r = put_manifest(&reg, repo, "bad%20tag", &image).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Tags, a page at a time.
    for tag in ["v2", "v3"] {
        assert_eq!(
            put_manifest(&reg, repo, tag, &image).await.status(),
            StatusCode::CREATED
        );
    }
    let r = reg
        .send(
            reqwest::Method::GET,
            &format!("/v2/{repo}/tags/list?n=2"),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "link"),
        format!("</v2/{repo}/tags/list?n=2&last=v2>; rel=\"next\"")
    );
    let page: Value = r.json().await.unwrap();
    assert_eq!(page, json!({"name": repo, "tags": ["v1", "v2"]}));
    let r = reg
        .send(
            reqwest::Method::GET,
            &format!("/v2/{repo}/tags/list?n=2&last=v2"),
            vec![],
        )
        .await;
    assert_eq!(header(&r, "link"), "");
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["tags"], json!(["v3"]));
    let r = reg
        .send(reqwest::Method::GET, "/v2/conf/none/tags/list", vec![])
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_codes(r).await, ["NAME_UNKNOWN"]);

    // The catalog.
    for blob in [&config[..], &layer[..]] {
        assert_eq!(
            upload(&reg, "conf/zeta", blob).await.status(),
            StatusCode::CREATED
        );
    }
    let r = put_manifest(&reg, "conf/zeta", "v1", &image).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .send(reqwest::Method::GET, "/v2/_catalog?n=1", vec![])
        .await;
    assert_eq!(
        header(&r, "link"),
        "</v2/_catalog?n=1&last=conf/app>; rel=\"next\""
    );
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["repositories"], json!(["conf/app"]));

    // Referrers: an artifact whose subject is the image.
    let sbom_config = br#"{}"#;
    assert_eq!(
        upload(&reg, repo, sbom_config).await.status(),
        StatusCode::CREATED
    );
    let artifact = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(sbom_config), "size": 2},
        "layers": [],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image_digest, "size": image.len()},
        "annotations": {"org.example.kind": "sbom"},
    }))
    .unwrap();
    let r = put_manifest(&reg, repo, &digest_of(&artifact), &artifact).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "oci-subject"), image_digest);
    let r = reg
        .send(
            reqwest::Method::GET,
            &format!("/v2/{repo}/referrers/{image_digest}"),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "content-type"),
        "application/vnd.oci.image.index.v1+json"
    );
    let index: Value = r.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(index["manifests"][0]["digest"], digest_of(&artifact));
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.example.sbom"
    );
    assert_eq!(
        index["manifests"][0]["annotations"]["org.example.kind"],
        "sbom"
    );
    let r = reg
        .send(
            reqwest::Method::GET,
            &format!("/v2/{repo}/referrers/{image_digest}?artifactType=application/vnd.other"),
            vec![],
        )
        .await;
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let index: Value = r.json().await.unwrap();
    assert_eq!(index["manifests"], json!([]));
    // A subject that is not (yet) in the registry is accepted.
    let orphan = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(sbom_config), "size": 2},
        "layers": [],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest_of(b"elsewhere"), "size": 9},
    }))
    .unwrap();
    let r = put_manifest(&reg, repo, &digest_of(&orphan), &orphan).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Delete a tag, then the manifest.
    let r = reg
        .send(
            reqwest::Method::DELETE,
            &format!("/v2/{repo}/manifests/v3"),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .send(
            reqwest::Method::GET,
            &format!("/v2/{repo}/manifests/v3"),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_codes(r).await, ["MANIFEST_UNKNOWN"]);
    let r = reg
        .send(
            reqwest::Method::DELETE,
            &format!("/v2/{repo}/manifests/{image_digest}"),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for reference in ["v1", image_digest.as_str()] {
        let r = reg
            .send(
                reqwest::Method::GET,
                &format!("/v2/{repo}/manifests/{reference}"),
                vec![],
            )
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{reference}");
    }
    // conf/zeta still holds it.
    let r = reg
        .send(reqwest::Method::GET, "/v2/conf/zeta/manifests/v1", vec![])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_pushed_image_is_a_local_image_and_local_images_can_be_pulled() {
    let test = "registry::a_pushed_image_is_a_local_image_and_local_images_can_be_pulled";
    if harness::skip_unless_root(test) {
        return;
    }
    let Some(busybox) = fixtures::busybox(test) else {
        return;
    };
    let daemon = TestDaemon::start();
    daemon.user_with_token("pusher", "admin").await;
    let reg = Reg::new(&daemon, Some(("pusher", "pusher-password")));
    let image = ImageBuilder::busybox(&busybox).cmd(&["true"]).build();
    assert_eq!(
        upload(&reg, "team/app", &image.config).await.status(),
        StatusCode::CREATED
    );
    for layer in &image.layers {
        assert_eq!(
            upload(&reg, "team/app", &layer.gzip).await.status(),
            StatusCode::CREATED
        );
    }
    let r = reg
        .req(reqwest::Method::PUT, "/v2/team/app/manifests/v1")
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(image.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let admin = daemon.admin_client().await;
    let images: Value = admin.get_json("/api/v1/images").await.unwrap();
    let pushed = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["digest"] == image.manifest_digest.as_str())
        .unwrap_or_else(|| panic!("the pushed image is local: {images}"));
    assert_eq!(pushed["tags"], json!(["team/app:v1"]));
    // While a container runs from it, the manifest cannot be deleted from under it.
    let created: Value = admin
        .send_json(
            hyper::Method::POST,
            "/api/v1/containers",
            &json!({"name": "from-push", "image": "team/app:v1"}),
        )
        .await
        .unwrap();
    let r = reg
        .send(
            reqwest::Method::DELETE,
            &format!("/v2/team/app/manifests/{}", image.manifest_digest),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_codes(r).await, ["DENIED"]);
    admin
        .send(
            hyper::Method::DELETE,
            &format!("/api/v1/containers/{}", created["id"].as_str().unwrap()),
            None,
        )
        .await
        .unwrap();
    // Its layers are unpacked for containers without a pull.
    let layers = daemon.data_root.join("layers");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n = std::fs::read_dir(&layers)
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0);
        if n == image.layers.len() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "layers unpacked");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // A local image (loaded, never pushed) is served under its name.
    let archive = daemon.dir.path().join("local.tar");
    let other = ImageBuilder::busybox(&busybox)
        .label("local", "yes")
        .build();
    other.write_docker_archive(&archive, "local/only:v7");
    let (status, _, err) = harness::run_wharf(
        harness::wharf_command()
            .args([
                "-H",
                &format!("unix://{}", daemon.socket.display()),
                "load",
                "-q",
                "-i",
            ])
            .arg(&archive),
    );
    assert!(status.success(), "{err}");
    let r = reg
        .send(reqwest::Method::GET, "/v2/local/only/manifests/v7", vec![])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let served = r.bytes().await.unwrap();
    let parsed: Value = serde_json::from_slice(&served).unwrap();
    let config = parsed["config"]["digest"].as_str().unwrap();
    let r = reg
        .send(
            reqwest::Method::GET,
            &format!("/v2/local/only/blobs/{config}"),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), other.config.as_slice());
}

/// Runs skopeo with `args`; (success, stderr).
fn skopeo(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn skopeo_copies_both_ways_by_tag_and_by_digest_with_rights_per_repository() {
    let test = "registry::skopeo_copies_both_ways_by_tag_and_by_digest_with_rights_per_repository";
    if harness::skip_unless_root(test) {
        return;
    }
    if harness::skip_unless_installed(test, "/usr/bin/skopeo", "skopeo") {
        return;
    }
    let Some(busybox) = fixtures::busybox(test) else {
        return;
    };
    let daemon = TestDaemon::start();
    daemon.user_with_token("pusher", "operator").await;
    let socket = daemon.unix_client();
    let _: Value = socket
        .send_json(
            hyper::Method::POST,
            "/api/v1/users",
            &json!({"name": "ci", "kind": "robot", "password": "ci-robot-password",
                    "grants": [{"pattern": "a", "pull": true}]}),
        )
        .await
        .unwrap();
    let addr = daemon.registry.unwrap().to_string();
    let work = tempfile::tempdir().unwrap();
    let image = ImageBuilder::busybox(&busybox)
        .layer(
            fixtures::LayerBuilder::new()
                .file("etc/motd", 0o644, b"pushed by skopeo\n")
                .finish(),
            "COPY motd /etc/",
        )
        .cmd(&["cat", "/etc/motd"])
        .build();
    let layout = image.write_oci_layout(&work.path().join("layout"), "v1");
    let src = format!("oci:{}:v1", layout.display());
    let creds = ["--dest-creds", "pusher:pusher-password"];

    // Push by tag, with the account's login.
    let dest = format!("docker://{addr}/a:v1");
    let (ok, err) = skopeo(
        &[
            &["copy", "--dest-tls-verify=false"][..],
            &creds,
            &[&src, &dest],
        ]
        .concat(),
    );
    assert!(ok, "push: {err}");
    // And by digest.
    let dest = format!("docker://{addr}/b@{}", image.manifest_digest);
    let (ok, err) = skopeo(
        &[
            &["copy", "--dest-tls-verify=false"][..],
            &creds,
            &[&src, &dest],
        ]
        .concat(),
    );
    assert!(ok, "push by digest: {err}");

    // Pull back, by tag and by digest: the very same manifest.
    for (source, name) in [
        (format!("docker://{addr}/a:v1"), "by-tag"),
        (
            format!("docker://{addr}/b@{}", image.manifest_digest),
            "by-digest",
        ),
    ] {
        let out = work.path().join(name);
        let dest = format!("oci:{}:x", out.display());
        let (ok, err) = skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            "pusher:pusher-password",
            "--preserve-digests",
            &source,
            &dest,
        ]);
        assert!(ok, "pull {name}: {err}");
        let index: Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["digest"],
            image.manifest_digest.as_str(),
            "{name}"
        );
    }

    // The robot may pull a, not push a nor pull b; without a login nothing.
    let dest = format!("oci:{}:x", work.path().join("robot").display());
    let (ok, err) = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        "ci:ci-robot-password",
        &format!("docker://{addr}/a:v1"),
        &dest,
    ]);
    assert!(ok, "the robot pulls a: {err}");
    let (ok, err) = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        "ci:ci-robot-password",
        &format!("docker://{addr}/b@{}", image.manifest_digest),
        &dest,
    ]);
    assert!(!ok, "the robot may not pull b");
    assert!(
        err.to_lowercase().contains("denied") || err.contains("401") || err.contains("403"),
        "{err}"
    );
    let (ok, _) = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "ci:ci-robot-password",
        &src,
        &format!("docker://{addr}/a:v2"),
    ]);
    assert!(!ok, "the robot may not push a");
    let (ok, _) = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-no-creds",
        &src,
        &format!("docker://{addr}/a:v3"),
    ]);
    assert!(!ok, "anonymous push is refused");
    let (ok, _) = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-no-creds",
        &format!("docker://{addr}/a:v1"),
        &dest,
    ]);
    assert!(!ok, "anonymous pull is off by default");
}

#[tokio::test]
async fn docker_logs_in_pushes_pulls_and_runs() {
    let test = "registry::docker_logs_in_pushes_pulls_and_runs";
    let Some(busybox) = fixtures::busybox(test) else {
        return;
    };
    let Some(docker) = crate::dockerd::Dockerd::start(test, json!({})) else {
        return;
    };
    let daemon = TestDaemon::start();
    daemon.user_with_token("pusher", "operator").await;
    let addr = daemon.registry.unwrap().to_string();
    let ok = crate::harness::succeeded;
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("img.tar");
    ImageBuilder::busybox(&busybox)
        .layer(
            fixtures::LayerBuilder::new()
                .file("hello", 0o644, b"hello from the wharf registry\n")
                .finish(),
            "COPY hello /",
        )
        .cmd(&["cat", "/hello"])
        .build()
        .write_docker_archive(&archive, "wharf-test/hello:v1");
    ok(
        docker.docker(&["load", "-i", archive.to_str().unwrap()]),
        "load",
    );
    let name = format!("{addr}/team/hello:v1");
    ok(docker.docker(&["tag", "wharf-test/hello:v1", &name]), "tag");

    let out = docker.docker(&["login", &addr, "-u", "pusher", "-p", "wrong-password"]);
    assert!(!out.status.success(), "a wrong password is refused");
    ok(
        docker.docker(&["login", &addr, "-u", "pusher", "-p", "pusher-password"]),
        "login",
    );
    ok(docker.docker(&["push", &name]), "push");
    ok(docker.docker(&["rmi", &name, "wharf-test/hello:v1"]), "rmi");
    ok(docker.docker(&["pull", &name]), "pull");
    let said = ok(
        docker.docker(&["run", "--rm", "--network", "none", &name]),
        "run",
    );
    assert_eq!(said, "hello from the wharf registry\n");

    // The push is a local image of wharf's at once.
    let admin = daemon.admin_client().await;
    let images: Value = admin.get_json("/api/v1/images").await.unwrap();
    assert!(
        images.as_array().unwrap().iter().any(|i| i["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("team/hello:v1"))),
        "{images}"
    );
}

/// Makes a file or directory look `hours` old (what the grace window measures).
fn age(path: &std::path::Path, hours: u32) {
    let out = std::process::Command::new("touch")
        .args(["-h", "-d", &format!("{hours} hours ago")])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
}

fn blob_path(daemon: &TestDaemon, digest: &str) -> std::path::PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    daemon
        .data_root
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}

#[tokio::test]
async fn the_cli_lists_removes_and_opens_repositories_and_gc_frees_only_the_unused() {
    let test =
        "registry::the_cli_lists_removes_and_opens_repositories_and_gc_frees_only_the_unused";
    if harness::skip_unless_root(test) {
        return;
    }
    let daemon = TestDaemon::start();
    daemon.user_with_token("pusher", "admin").await;
    let reg = Reg::new(&daemon, Some(("pusher", "pusher-password")));
    let host = format!("unix://{}", daemon.socket.display());
    let wharf =
        |args: &[&str]| harness::run_wharf(harness::wharf_command().args(["-H", &host]).args(args));
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = vec![9u8; 100_000];
    let orphan = vec![3u8; 50_000];
    for blob in [&config[..], &layer[..], &orphan[..]] {
        assert_eq!(
            upload(&reg, "gc/app", blob).await.status(),
            StatusCode::CREATED
        );
    }
    let image = manifest(config, &[&layer], json!({}));
    assert_eq!(
        put_manifest(&reg, "gc/app", "v1", &image).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        put_manifest(&reg, "gc/app", "v2", &image).await.status(),
        StatusCode::CREATED
    );

    let (status, out, err) = wharf(&["registry", "ls"]);
    assert!(status.success(), "{err}");
    assert!(out.contains("gc/app") && out.contains(" 2 "), "{out}");
    let (status, out, err) = wharf(&["registry", "tags", "gc/app"]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains("v1") && out.contains(&digest_of(&image)),
        "{out}"
    );
    let (status, _, err) = wharf(&["registry", "rm", "gc/app:v2"]);
    assert!(status.success(), "{err}");
    let (status, _, err) = wharf(&["registry", "rm", "gc/app:v2"]);
    assert!(!status.success() && err.contains("not found"), "{err}");
    let (status, _, err) = wharf(&["registry", "tags", "Bad/Name"]);
    assert!(!status.success() && err.contains("not valid"), "{err}");

    // Anonymous pull, once opened.
    let anonymous = Reg::new(&daemon, None);
    let get_v1 = || anonymous.send(reqwest::Method::GET, "/v2/gc/app/manifests/v1", vec![]);
    assert_eq!(get_v1().await.status(), StatusCode::UNAUTHORIZED);
    let (status, _, err) = wharf(&["registry", "anonymous-pull", "gc/app", "on"]);
    assert!(status.success(), "{err}");
    assert_eq!(get_v1().await.status(), StatusCode::OK);
    let r = upload(&anonymous, "gc/app", b"anonymous push").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "anonymous push never");
    // What anyone may pull, a logged-in account without a grant may pull too.
    let socket = daemon.unix_client();
    let _: Value = socket
        .send_json(
            hyper::Method::POST,
            "/api/v1/users",
            &json!({"name": "bare", "kind": "robot", "password": "bare-robot-password"}),
        )
        .await
        .unwrap();
    let bare = Reg::new(&daemon, Some(("bare", "bare-robot-password")));
    let r = bare
        .send(reqwest::Method::GET, "/v2/gc/app/manifests/v1", vec![])
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Fresh blobs are in their grace window: nothing goes, even the orphan.
    let (status, out, err) = wharf(&["registry", "gc", "--dry-run"]);
    assert!(status.success(), "{err}");
    assert!(out.contains("Would free 0B in 0 blobs"), "{out}");
    // Once old (files and links: a one-second grace here), the orphan (pushed, never used by
    // a manifest) goes; the image's blobs stay.
    for blob in [&config[..], &layer[..], &orphan[..], &image[..]] {
        age(&blob_path(&daemon, &digest_of(blob)), 2);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let admin = daemon.admin_client().await;
    let dry: Value = admin
        .send_json(
            hyper::Method::POST,
            "/api/v1/registry/gc",
            &json!({"dry_run": true, "grace_seconds": 1}),
        )
        .await
        .unwrap();
    assert_eq!(dry["blobs"], 1, "{dry}");
    assert_eq!(dry["bytes"], 50_000);
    assert!(
        blob_path(&daemon, &digest_of(&orphan)).exists(),
        "a dry run removes nothing"
    );
    let done: Value = admin
        .send_json(
            hyper::Method::POST,
            "/api/v1/registry/gc",
            &json!({"grace_seconds": 1}),
        )
        .await
        .unwrap();
    assert_eq!(done["removed"], json!([digest_of(&orphan)]), "{done}");
    assert!(!blob_path(&daemon, &digest_of(&orphan)).exists());
    let r = reg
        .send(
            reqwest::Method::GET,
            &format!("/v2/gc/app/blobs/{}", digest_of(&layer)),
            vec![],
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the image's layer is still served"
    );

    // Deleting the manifest frees its blobs at the next collection.
    let r = reg
        .send(
            reqwest::Method::DELETE,
            &format!("/v2/gc/app/manifests/{}", digest_of(&image)),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // The manifest's own blob goes; the links to its config and layer were made a moment ago,
    // so a default collection keeps those (a push may be about to use them); past the grace
    // they go, and the blobs with them.
    let kept: Value = admin
        .send_json(hyper::Method::POST, "/api/v1/registry/gc", &json!({}))
        .await
        .unwrap();
    assert_eq!(kept["removed"], json!([digest_of(&image)]), "{kept}");
    let done: Value = admin
        .send_json(
            hyper::Method::POST,
            "/api/v1/registry/gc",
            &json!({"grace_seconds": 1}),
        )
        .await
        .unwrap();
    assert_eq!(done["blobs"], 2, "config and layer: {done}");
    for blob in [&config[..], &layer[..], &image[..]] {
        assert!(!blob_path(&daemon, &digest_of(blob)).exists());
    }
}

#[tokio::test]
async fn gc_between_a_pushs_layers_and_its_manifest_leaves_the_image_whole() {
    let test = "registry::gc_between_a_pushs_layers_and_its_manifest_leaves_the_image_whole";
    if harness::skip_unless_root(test) {
        return;
    }
    let daemon = TestDaemon::start();
    daemon.user_with_token("pusher", "admin").await;
    let reg = Reg::new(&daemon, Some(("pusher", "pusher-password")));
    let admin = daemon.admin_client().await;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layers: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 10_000]).collect();
    for blob in std::iter::once(&config[..]).chain(layers.iter().map(Vec::as_slice)) {
        assert_eq!(
            upload(&reg, "gc/race", blob).await.status(),
            StatusCode::CREATED
        );
    }
    // Collections run while the push is between its layers and its manifest, and while the
    // manifest goes in.
    let collector = {
        let admin = admin.clone();
        tokio::spawn(async move {
            for _ in 0..5 {
                let _: Value = admin
                    .send_json(hyper::Method::POST, "/api/v1/registry/gc", &json!({}))
                    .await
                    .unwrap();
            }
        })
    };
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    let image = manifest(config, &refs, json!({}));
    let r = put_manifest(&reg, "gc/race", "v1", &image).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    collector.await.unwrap();
    let _: Value = admin
        .send_json(hyper::Method::POST, "/api/v1/registry/gc", &json!({}))
        .await
        .unwrap();
    for blob in std::iter::once(&config[..]).chain(refs.iter().copied()) {
        let r = reg
            .send(
                reqwest::Method::GET,
                &format!("/v2/gc/race/blobs/{}", digest_of(blob)),
                vec![],
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().as_ref(), blob);
    }
}

/// A `wharf serve` process with a registry login, for the tests that kill the daemon.
struct Served {
    daemon: harness::DaemonProcess,
    registry: String,
}

impl Served {
    fn registry_of(daemon: &harness::DaemonProcess) -> String {
        let host = format!("unix://{}", daemon.socket.display());
        let (status, out, err) = harness::run_wharf(
            harness::wharf_command().args(["-H", &host, "info", "--format", "json"]),
        );
        assert!(status.success(), "{err}");
        let info: Value = serde_json::from_str(&out).unwrap();
        info["registry_address"].as_str().unwrap().to_owned()
    }

    fn start() -> Served {
        let daemon = harness::DaemonProcess::start();
        let host = format!("unix://{}", daemon.socket.display());
        let (status, _, err) = harness::run_wharf_input(
            harness::wharf_command().args([
                "-H",
                &host,
                "user",
                "add",
                "pusher",
                "--role",
                "admin",
                "--password-stdin",
            ]),
            "pusher-password\n",
        );
        assert!(status.success(), "{err}");
        let registry = Self::registry_of(&daemon);
        Served { daemon, registry }
    }

    /// SIGKILLs the daemon and starts a new one on the same data root.
    fn kill_and_restart(&mut self) {
        self.daemon.kill_and_restart();
        self.registry = Self::registry_of(&self.daemon);
    }

    fn client(&self) -> Reg {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Reg {
            http: reqwest::Client::new(),
            base: format!("http://{}", self.registry),
            auth: Some(("pusher".into(), "pusher-password".into())),
        }
    }
}

/// Every blob in the store has the digest it is named by.
fn store_is_sound(data_root: &std::path::Path) -> usize {
    let mut checked = 0;
    let Ok(prefixes) = std::fs::read_dir(data_root.join("blobs/sha256")) else {
        return 0;
    };
    for prefix in prefixes.flatten() {
        for file in std::fs::read_dir(prefix.path()).unwrap().flatten() {
            let bytes = std::fs::read(file.path()).unwrap();
            assert_eq!(
                digest_of(&bytes),
                format!("sha256:{}", file.file_name().to_string_lossy()),
                "a blob holds what its name says"
            );
            checked += 1;
        }
    }
    checked
}

#[tokio::test]
async fn parallel_uploads_of_one_blob_and_a_corrupt_one_end_with_one_good_blob() {
    if harness::skip_unless_root(
        "registry::parallel_uploads_of_one_blob_and_a_corrupt_one_end_with_one_good_blob",
    ) {
        return;
    }
    let daemon = TestDaemon::start();
    daemon.user_with_token("pusher", "admin").await;
    let blob: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let digest = digest_of(&blob);
    let mut tasks = Vec::new();
    for i in 0..21 {
        let reg = Reg::new(&daemon, Some(("pusher", "pusher-password")));
        let mut body = blob.clone();
        if i == 20 {
            body[12345] ^= 1; // the corrupt one claims the same digest
        }
        let digest = digest.clone();
        tasks.push(tokio::spawn(async move {
            reg.send(
                reqwest::Method::POST,
                &format!("/v2/par/app/blobs/uploads/?digest={digest}"),
                body,
            )
            .await
            .status()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert!(
        statuses[..20].iter().all(|s| *s == StatusCode::CREATED),
        "{statuses:?}"
    );
    assert_eq!(statuses[20], StatusCode::BAD_REQUEST);
    assert_eq!(store_is_sound(&daemon.data_root), 1);
    let left: Vec<_> = std::fs::read_dir(daemon.data_root.join("uploads"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_daemon_killed_mid_upload_keeps_the_session_and_loses_nothing() {
    if harness::skip_unless_root(
        "registry::a_daemon_killed_mid_upload_keeps_the_session_and_loses_nothing",
    ) {
        return;
    }
    let mut served = Served::start();
    let reg = served.client();
    let blob: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 253) as u8).collect();
    let digest = digest_of(&blob);
    let r = reg
        .send(reqwest::Method::POST, "/v2/kill/app/blobs/uploads/", vec![])
        .await;
    let location = header(&r, "location");
    let r = reg
        .req(reqwest::Method::PATCH, &location)
        .header("content-range", format!("0-{}", (1 << 20) - 1))
        .body(blob[..1 << 20].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // A streamed PATCH that stalls halfway; the daemon dies under it.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stalled = {
        let request = reg
            .req(reqwest::Method::PATCH, &location)
            .body(reqwest::Body::wrap_stream(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ));
        tokio::spawn(async move { request.send().await })
    };
    tx.send(Ok(blob[1 << 20..2 << 20].to_vec())).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // And many commits of other blobs at the same time.
    let mut commits = Vec::new();
    for i in 0..8u8 {
        let reg = served.client();
        commits.push(tokio::spawn(async move {
            let body = vec![i; 2 << 20];
            // The daemon dies under some of these: their errors are expected.
            let _ = reg
                .req(
                    reqwest::Method::POST,
                    &format!("/v2/kill/other/blobs/uploads/?digest={}", digest_of(&body)),
                )
                .body(body)
                .send()
                .await;
        }));
    }
    // Kill as soon as the first of them is in the store, the others still arriving.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store_is_sound(&served.daemon.data_root) == 0 {
        assert!(std::time::Instant::now() < deadline, "a commit lands");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    served.kill_and_restart();
    drop(tx);
    let _ = stalled.await;
    for c in commits {
        let _ = c.await;
    }

    // No partial blob is visible, the database is whole.
    store_is_sound(&served.daemon.data_root);
    let mut db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(served.daemon.data_root.join("wharf.db"))
        .connect()
        .await
        .unwrap();
    use sqlx::ConnectOptions as _;
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(check, "ok");

    // The session survived: it tells what it holds, and the upload goes on from there.
    let reg = served.client();
    let r = reg.send(reqwest::Method::GET, &location, vec![]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let range = header(&r, "range");
    let held: usize = range.strip_prefix("0-").unwrap().parse::<usize>().unwrap() + 1;
    assert!((1 << 20..=2 << 20).contains(&held), "{range}");
    let r = reg
        .req(reqwest::Method::PATCH, &location)
        .header("content-range", format!("{held}-{}", blob.len() - 1))
        .body(blob[held..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .send(
            reqwest::Method::PUT,
            &format!("{location}?digest={digest}"),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .send(
            reqwest::Method::GET,
            &format!("/v2/kill/app/blobs/{digest}"),
            vec![],
        )
        .await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), blob.as_slice());
    // Re-pushing the interrupted blobs works.
    for i in 0..8u8 {
        assert_eq!(
            upload(&reg, "kill/other", &vec![i; 2 << 20]).await.status(),
            StatusCode::CREATED
        );
    }

    // An abandoned session is reaped when the daemon starts.
    let r = reg
        .send(reqwest::Method::POST, "/v2/kill/app/blobs/uploads/", vec![])
        .await;
    let abandoned = header(&r, "location");
    let id = abandoned.rsplit('/').next().unwrap().to_owned();
    let session = served.daemon.data_root.join("uploads").join(&id);
    age(&session.join("data"), 48);
    served.kill_and_restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while session.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned upload is reaped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = served
        .client()
        .send(reqwest::Method::GET, &abandoned, vec![])
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn over_https_with_the_generated_certificate_trusted() {
    let test = "registry::over_https_with_the_generated_certificate_trusted";
    let Some(busybox) = fixtures::busybox(test) else {
        return;
    };
    if harness::skip_unless_installed(test, "/usr/bin/skopeo", "skopeo") {
        return;
    }
    let Some(docker) = crate::dockerd::Dockerd::start(test, json!({})) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = harness::test_config(dir.path());
    config.tls = wharf::config::TlsMode::On;
    let daemon = TestDaemon::start_in(dir, config).unwrap();
    daemon.user_with_token("pusher", "operator").await;
    let addr = daemon.registry.unwrap().to_string();

    // skopeo verifies the certificate against the daemon's CA, and nothing else.
    let certs = tempfile::tempdir().unwrap();
    std::fs::copy(
        daemon.data_root.join("tls/ca.pem"),
        certs.path().join("ca.crt"),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let image = ImageBuilder::busybox(&busybox)
        .cmd(&["echo", "over tls"])
        .build();
    let layout = image.write_oci_layout(&work.path().join("layout"), "v1");
    let src = format!("oci:{}:v1", layout.display());
    let dest = format!("docker://{addr}/tls/app:v1");
    let (ok, err) = skopeo(&[
        "copy",
        "--dest-creds",
        "pusher:pusher-password",
        "--dest-tls-verify=true",
        "--dest-cert-dir",
        certs.path().to_str().unwrap(),
        &src,
        &dest,
    ]);
    assert!(ok, "push over verified TLS: {err}");
    let empty = tempfile::tempdir().unwrap();
    let (ok, err) = skopeo(&[
        "copy",
        "--dest-creds",
        "pusher:pusher-password",
        "--dest-tls-verify=true",
        "--dest-cert-dir",
        empty.path().to_str().unwrap(),
        &src,
        &dest,
    ]);
    assert!(!ok, "without the CA the certificate is not trusted");
    assert!(err.contains("certificate"), "{err}");
    let out = work.path().join("back");
    let (ok, err) = skopeo(&[
        "copy",
        "--src-creds",
        "pusher:pusher-password",
        "--src-cert-dir",
        certs.path().to_str().unwrap(),
        &dest,
        &format!("oci:{}:x", out.display()),
    ]);
    assert!(ok, "pull over verified TLS: {err}");

    // docker over HTTPS (the listener speaks nothing else): login, push, pull, run.
    let ok = crate::harness::succeeded;
    ok(
        docker.docker(&["login", &addr, "-u", "pusher", "-p", "pusher-password"]),
        "login",
    );
    let name = format!("{addr}/tls/app:v1");
    ok(docker.docker(&["pull", &name]), "pull");
    ok(
        docker.docker(&["tag", &name, &format!("{addr}/tls/copy:v1")]),
        "tag",
    );
    ok(
        docker.docker(&["push", &format!("{addr}/tls/copy:v1")]),
        "push",
    );
    let said = ok(
        docker.docker(&["run", "--rm", "--network", "none", &name]),
        "run",
    );
    assert_eq!(said, "over tls\n");
}

#[tokio::test]
async fn a_pushs_blob_links_survive_image_removal_and_gc_even_for_old_blobs() {
    let test = "registry::a_pushs_blob_links_survive_image_removal_and_gc_even_for_old_blobs";
    if harness::skip_unless_root(test) {
        return;
    }
    let daemon = TestDaemon::start();
    daemon.user_with_token("pusher", "admin").await;
    let reg = Reg::new(&daemon, Some(("pusher", "pusher-password")));
    let admin = daemon.admin_client().await;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = vec![7u8; 20_000];
    let image = manifest(config, &[&layer], json!({}));
    for blob in [&config[..], &layer[..]] {
        assert_eq!(
            upload(&reg, "keep/a", blob).await.status(),
            StatusCode::CREATED
        );
    }
    assert_eq!(
        put_manifest(&reg, "keep/a", "v1", &image).await.status(),
        StatusCode::CREATED
    );

    // Another push has its blobs in keep/b, manifest not yet sent, when keep/a's image goes.
    for blob in [&config[..], &layer[..]] {
        assert_eq!(
            upload(&reg, "keep/b", blob).await.status(),
            StatusCode::CREATED
        );
    }
    let r = reg
        .send(
            reqwest::Method::DELETE,
            &format!("/v2/keep/a/manifests/{}", digest_of(&image)),
            vec![],
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        put_manifest(&reg, "keep/b", "v1", &image).await.status(),
        StatusCode::CREATED
    );

    // A blob stored long ago, mounted into keep/c by a push now: its link is as young as the
    // push, whatever the file's age, so a collection keeps it.
    let path = blob_path(&daemon, &digest_of(&layer));
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    for blob in [&config[..], &layer[..]] {
        let r = reg
            .send(
                reqwest::Method::POST,
                &format!(
                    "/v2/keep/c/blobs/uploads/?mount={}&from=keep/b",
                    digest_of(blob)
                ),
                vec![],
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let report: Value = admin
        .send_json(hyper::Method::POST, "/api/v1/registry/gc", &json!({}))
        .await
        .unwrap();
    assert_eq!(report["links"], 0, "{report}");
    assert_eq!(
        put_manifest(&reg, "keep/c", "v1", &image).await.status(),
        StatusCode::CREATED
    );
}

#[test]
fn wharf_login_and_pull_go_through_a_registrys_bearer_token_flow() {
    let test = "registry::wharf_login_and_pull_go_through_a_registrys_bearer_token_flow";
    if harness::skip_unless_root(test) {
        return;
    }
    let Some(busybox) = fixtures::busybox(test) else {
        return;
    };
    // The source: another wharf, whose registry answers 401 with a Bearer challenge.
    let source = Served::start();
    let source_host = format!("unix://{}", source.daemon.socket.display());
    let archive = source.daemon.dir.path().join("private.tar");
    ImageBuilder::busybox(&busybox)
        .cmd(&["echo", "from behind a token"])
        .build()
        .write_docker_archive(&archive, "wharf-test/private:v1");
    let (status, _, err) = harness::run_wharf(
        harness::wharf_command()
            .args(["-H", &source_host, "load", "-q", "-i"])
            .arg(&archive),
    );
    assert!(status.success(), "{err}");

    let puller = harness::DaemonProcess::start();
    let host = format!("unix://{}", puller.socket.display());
    let reference = format!("{}/wharf-test/private:v1", source.registry);
    let pull = || {
        harness::run_wharf(harness::wharf_command().args(["-H", &host, "pull", "-q", &reference]))
    };
    let (status, _, err) = pull();
    assert!(!status.success());
    assert!(
        err.contains(&format!("wharf login {}", source.registry)),
        "{err}"
    );
    let login = |password: &str| {
        harness::run_wharf_input(
            harness::wharf_command()
                .args(["-H", &host, "login", &source.registry, "-u", "pusher"])
                .arg("--password-stdin"),
            &format!("{password}\n"),
        )
    };
    let (status, _, err) = login("not-the-password");
    assert!(!status.success());
    assert!(err.contains("wrong user name or password"), "{err}");
    let (status, _, err) = login("pusher-password");
    assert!(status.success(), "the token flow accepts the login: {err}");
    let (status, _, err) = pull();
    assert!(status.success(), "{err}");
    let (status, out, err) =
        harness::run_wharf(harness::wharf_command().args(["-H", &host, "run", "--rm", &reference]));
    assert!(status.success(), "{err}");
    assert_eq!(out, "from behind a token\n");
}

#[tokio::test]
async fn idle_upload_sessions_hold_no_descriptors() {
    let test = "registry::idle_upload_sessions_hold_no_descriptors";
    if harness::skip_unless_root(test) {
        return;
    }
    let served = Served::start();
    let reg = served.client();
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", served.daemon.pid()))
            .unwrap()
            .count()
    };
    // One session first, so whatever a first upload opens for good is open already.
    let r = reg
        .send(reqwest::Method::POST, "/v2/idle/one/blobs/uploads/", vec![])
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let before = fds();
    let mut locations = Vec::new();
    for _ in 0..40 {
        let r = reg
            .send(reqwest::Method::POST, "/v2/idle/one/blobs/uploads/", vec![])
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let location = header(&r, "location");
        let r = reg
            .send(reqwest::Method::PATCH, &location, b"some bytes".to_vec())
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        locations.push(header(&r, "location"));
    }
    let after = fds();
    assert!(
        after < before + 10,
        "40 idle sessions must not keep 40 files open: {before} -> {after}"
    );
    // They still go on where they stopped.
    let r = reg.send(reqwest::Method::GET, &locations[0], vec![]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-9");
}

/// A manifest's dashboard page shows what a pusher wrote as text, and deletion refuses what
/// would leave an index incomplete or is not in the repository.
#[tokio::test]
async fn a_manifest_page_escapes_what_was_pushed_and_deletion_keeps_indexes_whole() {
    if harness::skip_unless_root(
        "registry::a_manifest_page_escapes_what_was_pushed_and_deletion_keeps_indexes_whole",
    ) {
        return;
    }
    let daemon = TestDaemon::start();
    daemon.user_with_token("pusher", "operator").await;
    daemon.user_with_token("kim", "admin").await;
    let reg = Reg::new(&daemon, Some(("pusher", "pusher-password")));
    let (config, layer) = (b"{\"config\":{}}".to_vec(), b"layer bytes".to_vec());
    for blob in [&config, &layer] {
        assert_eq!(
            upload(&reg, "team/marked", blob).await.status(),
            StatusCode::CREATED
        );
    }
    let image = manifest(
        &config,
        &[&layer],
        json!({"annotations": {"note": "<script>alert(9)</script>"}}),
    );
    let image_digest = digest_of(&image);
    assert_eq!(
        put_manifest(&reg, "team/marked", "v1", &image)
            .await
            .status(),
        StatusCode::CREATED
    );
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image_digest, "size": image.len(),
            "platform": {"os": "linux", "architecture": "<b>arch</b>"}}],
    }))
    .unwrap();
    let index_digest = digest_of(&index);
    let r = reg
        .req(reqwest::Method::PUT, "/v2/team/marked/manifests/multi")
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(index)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let client = daemon.tcp_client();
    let kim = crate::web::sign_in(&client, "kim", "kim-password").await;
    let page = |digest: &str| format!("/registry/manifest?repository=team/marked&digest={digest}");
    let r = crate::web::get(&client, &page(&image_digest), &kim).await;
    assert_eq!(r.status, hyper::StatusCode::OK);
    let text = crate::web::text(&r);
    assert!(
        text.contains("&#60;script&#62;alert(9)") && !text.contains("<script>alert(9)"),
        "{text}"
    );
    let r = crate::web::get(&client, &page(&index_digest), &kim).await;
    let text = crate::web::text(&r);
    assert!(
        text.contains("linux/&#60;b&#62;arch") && !text.contains("<b>arch"),
        "{text}"
    );

    // The index lists the image: the image may not go before it; the index may.
    let admin = daemon.admin_client().await;
    let delete =
        |digest: &str| format!("/api/v1/registry/manifests?repository=team/marked&digest={digest}");
    let err = admin
        .send(hyper::Method::DELETE, &delete(&image_digest), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("listed by the index {index_digest}")),
        "{err}"
    );
    // Not in the repository: 404, whatever uses it elsewhere.
    let err = admin
        .send(
            hyper::Method::DELETE,
            &format!("/api/v1/registry/manifests?repository=team/other&digest={image_digest}"),
            None,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("404") || err.contains("not found"), "{err}");
    admin
        .send(hyper::Method::DELETE, &delete(&index_digest), None)
        .await
        .unwrap();
    admin
        .send(hyper::Method::DELETE, &delete(&image_digest), None)
        .await
        .unwrap();
    let r = crate::web::get(&client, &page(&image_digest), &kim).await;
    assert_eq!(r.status, hyper::StatusCode::NOT_FOUND);
}

// An Argon2id check takes 19 MiB. The daemon gives it back afterwards instead of keeping it,
// by default, in each thread that did one (glibc's per-thread arenas).
#[tokio::test]
async fn password_checks_leave_no_memory_behind() {
    if harness::skip_unless_root("registry::password_checks_leave_no_memory_behind") {
        return;
    }
    let served = Served::start();
    let pid = served.daemon.pid();
    let rss_kb = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    // One sign-in first: glibc's default mmap threshold grows only once a big block was freed.
    let r = served
        .client()
        .send(reqwest::Method::GET, "/v2/", vec![])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let before = rss_kb();
    // Twelve sign-ins at once spread over the blocking threads.
    let checks: Vec<_> = (0..12)
        .map(|_| {
            let reg = served.client();
            tokio::spawn(async move { reg.send(reqwest::Method::GET, "/v2/", vec![]).await })
        })
        .collect();
    for check in checks {
        assert_eq!(check.await.unwrap().status(), StatusCode::OK);
    }
    let after = rss_kb();
    assert!(
        after < before + (24 << 10),
        "the daemon's RSS went from {before} to {after} kB over 12 password checks"
    );
}

// A daemon told to stop right after a push finishes unpacking the pushed layer first: no
// half-made layer directory is left behind, and the layer is there at the next start.
#[tokio::test]
async fn a_stop_right_after_a_push_lets_the_unpack_finish() {
    if harness::skip_unless_root("registry::a_stop_right_after_a_push_lets_the_unpack_finish") {
        return;
    }
    let mut served = Served::start();
    let reg = served.client();
    let big = fixtures::LayerBuilder::new()
        .file("big", 0o644, &vec![7u8; 48 << 20])
        .finish();
    let image = ImageBuilder::scratch().layer(big, "big").build();
    assert_eq!(
        upload(&reg, "stop/app", &image.config).await.status(),
        StatusCode::CREATED
    );
    for layer in &image.layers {
        assert_eq!(
            upload(&reg, "stop/app", &layer.gzip).await.status(),
            StatusCode::CREATED
        );
    }
    let r = put_manifest(&reg, "stop/app", "v1", &image.manifest).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    drop(reg);
    served.daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = served
        .daemon
        .wait_exit(std::time::Duration::from_secs(60))
        .expect("the daemon stops");
    assert!(status.success(), "{}", served.daemon.stderr());
    let layers = served.daemon.data_root.join("layers");
    let names: Vec<String> = std::fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".incoming")),
        "a layer was left half unpacked: {names:?}"
    );
    assert!(
        names.iter().any(|n| !n.starts_with('.')),
        "the pushed layer was unpacked: {names:?}"
    );
}
