//! Parsing a pushed manifest: its kind, what it references, its subject and artifact type,
//! and — for a runnable image — the local image it makes.

use serde_json::Value;

use super::errors::{Code, RegistryError};
use crate::db::RefKind;
use crate::domain::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The largest manifest accepted (bytes).
pub const MAX_MANIFEST: usize = 4 << 20;

/// A descriptor a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: i64,
}

/// What a pushed manifest says.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub media_type: String,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    /// An index's entries.
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    pub annotations: Option<Value>,
}

impl Parsed {
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }

    /// Everything the manifest needs to exist in the repository before it may be stored.
    pub fn references(&self) -> Vec<(Digest, RefKind)> {
        self.config
            .iter()
            .chain(&self.layers)
            .map(|d| (d.digest.clone(), RefKind::Blob))
            .chain(
                self.manifests
                    .iter()
                    .map(|d| (d.digest.clone(), RefKind::Manifest)),
            )
            .collect()
    }

    /// Whether this is an image whose config the local image store understands.
    pub fn is_runnable_image(&self) -> bool {
        !self.is_index()
            && self
                .config
                .as_ref()
                .is_some_and(|c| c.media_type == OCI_CONFIG || c.media_type == DOCKER_CONFIG)
    }
}

fn invalid(reason: impl Into<String>) -> RegistryError {
    RegistryError::new(Code::ManifestInvalid, reason)
}

fn descriptor(v: &Value, what: &str) -> Result<Descriptor, RegistryError> {
    let media_type = v["mediaType"]
        .as_str()
        .ok_or_else(|| invalid(format!("{what}: mediaType is missing")))?;
    let digest = v["digest"]
        .as_str()
        .ok_or_else(|| invalid(format!("{what}: digest is missing")))?;
    let digest = Digest::parse(digest).map_err(|e| invalid(format!("{what}: {e}")))?;
    let size = v["size"]
        .as_i64()
        .filter(|s| *s >= 0)
        .ok_or_else(|| invalid(format!("{what}: size must be a number of bytes")))?;
    Ok(Descriptor {
        media_type: media_type.to_owned(),
        digest,
        size,
    })
}

/// Parses `bytes` sent with `content_type` (the request's Content-Type, if any).
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, RegistryError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("the manifest is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(invalid("the manifest is not a JSON object"));
    }
    if v["schemaVersion"].as_i64() != Some(2) {
        return Err(invalid(
            "schemaVersion must be 2 (schema 1 manifests are not accepted)",
        ));
    }
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| !c.is_empty() && *c != "application/json");
    let declared = v["mediaType"].as_str();
    if let (Some(declared), Some(sent)) = (declared, content_type)
        && declared != sent
    {
        return Err(invalid(format!(
            "the manifest's mediaType {declared:?} differs from its Content-Type {sent:?}"
        )));
    }
    let media_type = match declared.or(content_type) {
        Some(m) => m.to_owned(),
        None if v["manifests"].is_array() => OCI_INDEX.to_owned(),
        None => OCI_MANIFEST.to_owned(),
    };
    let mut parsed = Parsed {
        media_type: media_type.clone(),
        config: None,
        layers: Vec::new(),
        manifests: Vec::new(),
        subject: None,
        artifact_type: v["artifactType"].as_str().map(str::to_owned),
        annotations: v.get("annotations").filter(|a| a.is_object()).cloned(),
    };
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            parsed.config = Some(descriptor(&v["config"], "config")?);
            let layers = v["layers"]
                .as_array()
                .ok_or_else(|| invalid("layers must be an array"))?;
            for (i, layer) in layers.iter().enumerate() {
                parsed
                    .layers
                    .push(descriptor(layer, &format!("layer {i}"))?);
            }
            if parsed.artifact_type.is_none() {
                parsed.artifact_type = parsed.config.as_ref().map(|c| c.media_type.clone());
            }
        }
        OCI_INDEX | DOCKER_LIST => {
            let manifests = v["manifests"]
                .as_array()
                .ok_or_else(|| invalid("manifests must be an array"))?;
            for (i, m) in manifests.iter().enumerate() {
                parsed
                    .manifests
                    .push(descriptor(m, &format!("manifest {i}"))?);
            }
        }
        other => {
            return Err(invalid(format!(
                "media type {other:?} is not an image manifest or index"
            )));
        }
    }
    if let Some(subject) = v.get("subject").filter(|s| !s.is_null()) {
        parsed.subject = Some(descriptor(subject, "subject")?.digest);
    }
    Ok(parsed)
}

/// The runnable image of a manifest: layer rows from its config's diff ids.
pub fn image_of(
    parsed: &Parsed,
    digest: &Digest,
    size: i64,
    config_bytes: &[u8],
) -> Option<crate::db::NewImage> {
    let config: Value = serde_json::from_slice(config_bytes).ok()?;
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()?
        .iter()
        .map(|d| Digest::parse(d.as_str()?).ok())
        .collect::<Option<Vec<_>>>()?;
    if diff_ids.len() != parsed.layers.len() {
        return None;
    }
    let chains = crate::images::snapshot::chain_ids(&diff_ids);
    Some(crate::db::NewImage {
        digest: digest.to_string(),
        media_type: parsed.media_type.clone(),
        config_digest: parsed.config.as_ref()?.digest.to_string(),
        size,
        os: config["os"].as_str().unwrap_or("linux").to_owned(),
        architecture: config["architecture"]
            .as_str()
            .unwrap_or("amd64")
            .to_owned(),
        layers: parsed
            .layers
            .iter()
            .zip(diff_ids.iter().zip(&chains))
            .map(|(l, (diff, chain))| crate::db::LayerRecord {
                blob_digest: l.digest.to_string(),
                diff_id: diff.to_string(),
                chain_id: chain.to_string(),
                size: l.size,
                media_type: l.media_type.clone(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn image_manifests_and_indexes_parse_with_their_references() {
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": D1, "size": 10},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 20}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": D2, "size": 3}});
        let p = parse(&serde_json::to_vec(&m).unwrap(), Some(OCI_MANIFEST)).unwrap();
        assert!(p.is_runnable_image());
        assert_eq!(p.references().len(), 2);
        assert_eq!(p.subject.as_ref().unwrap().as_str(), D2);
        assert_eq!(p.artifact_type.as_deref(), Some(OCI_CONFIG));
        let i = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": D1, "size": 5}]});
        let p = parse(&serde_json::to_vec(&i).unwrap(), Some(DOCKER_LIST)).unwrap();
        assert!(p.is_index());
        assert_eq!(
            p.references(),
            vec![(Digest::parse(D1).unwrap(), RefKind::Manifest)]
        );
    }

    #[test]
    fn bad_manifests_name_their_fault() {
        let cases: [(&str, Option<&str>, &str); 5] = [
            ("nope", None, "not JSON"),
            (r#"{"schemaVersion": 1}"#, None, "schemaVersion must be 2"),
            (
                r#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}"#,
                Some(OCI_INDEX),
                "differs from its Content-Type",
            ),
            (
                r#"{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:zz", "size": 1}, "layers": []}"#,
                None,
                "config",
            ),
            (
                r#"{"schemaVersion": 2, "mediaType": "text/plain"}"#,
                None,
                "not an image manifest or index",
            ),
        ];
        for (body, content_type, expected) in cases {
            let err = parse(body.as_bytes(), content_type).unwrap_err();
            assert_eq!(err.code(), Code::ManifestInvalid);
            assert!(err.to_string().contains(expected), "{body}: {err}");
        }
    }
}
