//! The builder: runs a parsed Dockerfile's stages step by step. `RUN` runs in a container of
//! the engine and its writable layer becomes the step's layer; `COPY`/`ADD` copy into an
//! overlay of the image so far, whose upper directory becomes the layer; every other
//! instruction changes only the config. A step that makes a layer is looked up in the build
//! cache first, by a key that chains the parent state, the instruction (after substitution),
//! the build arguments in scope and the content of what is copied.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::context::{self, Context};
use super::dockerfile::{self, Args, Instruction, Keyword};
use crate::config::DataRoot;
use crate::db::Db;
use crate::db::build::CachedLayer;
use crate::domain::{Digest, ImageRef};
use crate::engine::archive::{self, Owners, Root};
use crate::engine::{ContainerConfig, Engine, EngineError};
use crate::images::compose::{Draft, NewLayer, store_layer};
use crate::images::snapshot::{LayerStore, StackLayer, chain_ids};
use crate::images::store::{BlobStore, sha256};

/// What to build, besides the context.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct BuildRequest {
    /// Names for the result, `name[:tag]`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The Dockerfile's path in the context (default `Dockerfile`).
    pub dockerfile: Option<String>,
    /// `ARG` values.
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// Run every step, the cache unread.
    #[serde(default)]
    pub no_cache: bool,
    /// Build up to this stage (default: the last).
    pub target: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Parse(#[from] dockerfile::ParseError),
    /// A step failed; the message names the line.
    #[error("Dockerfile line {line}: {keyword}: {reason}")]
    Step {
        line: usize,
        keyword: &'static str,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("the build was cancelled: the client went away")]
    Cancelled,
}

/// Where the build's output goes: lines for the client, as NDJSON objects.
#[derive(Clone)]
pub struct Log(pub mpsc::UnboundedSender<Value>);

impl Log {
    pub fn say(&self, text: impl Into<String>) {
        let mut text = text.into();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let _ = self.0.send(json!({ "stream": text }));
    }

    fn gone(&self) -> bool {
        self.0.is_closed()
    }
}

/// The image a build made.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Built {
    pub digest: String,
    pub tags: Vec<String>,
    /// Steps that made a layer, and how many of them came from the cache.
    pub layer_steps: usize,
    pub cached_steps: usize,
}

/// One stage as it stands.
struct Stage {
    name: Option<String>,
    draft: Draft,
    /// The cache key of the state so far.
    key: String,
    /// `ARG`s declared in the stage, with their values.
    args: BTreeMap<String, String>,
    shell: Vec<String>,
    /// Whether this stage set CMD (an ENTRYPOINT then keeps it).
    cmd_set: bool,
}

impl Stage {
    fn env(&self) -> Vec<String> {
        self.draft.config["config"]["Env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }

    /// The value of `name` for substitution: the environment first, then the build args.
    fn lookup(&self, name: &str) -> Option<String> {
        self.env()
            .iter()
            .find_map(|e| {
                e.split_once('=')
                    .filter(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_owned())
            })
            .or_else(|| self.args.get(name).cloned())
    }

    fn workdir(&self) -> String {
        self.draft.config["config"]["WorkingDir"]
            .as_str()
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
            .to_owned()
    }

    fn advance(&mut self, text: &str) {
        self.key = sha256(format!("{}\n{text}", self.key).as_bytes()).to_string();
    }
}

/// Everything a build works with.
pub struct Builder<'a> {
    pub engine: &'a Engine,
    pub db: &'a Db,
    pub layout: &'a DataRoot,
    pub architecture: &'a str,
    /// Registries a base image may be pulled from over plain HTTP (besides loopback ones).
    pub insecure_registries: &'a [String],
    pub log: Log,
}

/// Removes a build's working directory however the build ends.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An overlay mounted for a step, unmounted when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The label of a `RUN` step's container (its Dockerfile line).
const STEP_LABEL: &str = "wharf.build.step";

/// What builds that were running when the daemon stopped left: their steps' containers,
/// mounts and directories. Called once at start, before any build.
pub async fn clean_leftovers(engine: &Engine, db: &Db, layout: &DataRoot) {
    if let Ok(rows) = db.list_containers(true).await {
        for row in rows {
            let config: Option<ContainerConfig> = serde_json::from_str(&row.config).ok();
            if config.is_some_and(|c| c.labels.contains_key(STEP_LABEL))
                && let Err(e) = engine.remove(&row.id, true, true).await
            {
                tracing::warn!(container = %row.id, error = %e, "could not remove a build step's container");
            }
        }
    }
    let builds = layout.root().join("builds");
    let _ = tokio::task::spawn_blocking(move || {
        let prefix = format!("{}/", builds.display());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Ok(entries) = std::fs::read_dir(&builds) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    })
    .await;
}

fn step_error(i: &Instruction, reason: impl std::fmt::Display) -> BuildError {
    BuildError::Step {
        line: i.line,
        keyword: i.keyword.name(),
        reason: reason.to_string(),
    }
}

fn blocking_failed(e: tokio::task::JoinError) -> BuildError {
    BuildError::Invalid(format!("a build task failed: {e}"))
}

impl Builder<'_> {
    /// Runs the build over the context in `context_tar` (a tar, read off the async threads).
    pub async fn build(
        &self,
        context_tar: impl std::io::Read + Send + 'static,
        request: &BuildRequest,
    ) -> Result<Built, BuildError> {
        let tags = request
            .tags
            .iter()
            .map(|t| {
                let r = ImageRef::parse(t).map_err(|e| BuildError::Invalid(e.to_string()))?;
                if r.digest.is_some() {
                    return Err(BuildError::Invalid(format!(
                        "the tag {t} must be name[:tag], not a digest"
                    )));
                }
                Ok((r.repository, r.tag.unwrap_or_else(|| "latest".into())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let dir = self
            .layout
            .root()
            .join("builds")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let work = WorkDir(dir.clone());
        let dockerfile_name = request
            .dockerfile
            .clone()
            .unwrap_or_else(|| "Dockerfile".into());
        let (context, text) = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || -> Result<(Context, String), BuildError> {
                // Root's alone, like the rest of the data root's working directories.
                std::os::unix::fs::DirBuilderExt::mode(
                    std::fs::DirBuilder::new().recursive(true),
                    0o700,
                )
                .create(&dir)
                .map_err(|e| BuildError::Invalid(format!("make the build directory: {e}")))?;
                let context =
                    Context::receive(context_tar, &dir.join("context.tar"), &dir.join("context"))
                        .map_err(|e| BuildError::Invalid(format!("the build context: {e}")))?;
                let path = context
                    .resolve(&dockerfile_name)
                    .map_err(|e| BuildError::Invalid(format!("the Dockerfile: {e}")))?;
                let bytes = context
                    .read(&path, 1 << 20)
                    .map_err(|e| BuildError::Invalid(format!("the Dockerfile: {e}")))?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    BuildError::Invalid(format!("the Dockerfile {dockerfile_name} is not UTF-8"))
                })?;
                Ok((context, text))
            })
            .await
            .map_err(blocking_failed)??
        };
        let parsed = dockerfile::parse(&text)?;
        let work_in = Work {
            dir: dir.clone(),
            context: Arc::new(context),
        };
        let built = self.run(&parsed, request, &tags, &work_in).await;
        drop(work_in);
        // The context may be many files: removed off the async threads.
        let _ = tokio::task::spawn_blocking(move || drop(work)).await;
        built
    }

    async fn run(
        &self,
        parsed: &dockerfile::Parsed,
        request: &BuildRequest,
        tags: &[(String, String)],
        work: &Work,
    ) -> Result<Built, BuildError> {
        let escape = parsed.escape;
        let mut used_args: HashSet<String> = HashSet::new();
        // ARGs before the first FROM: for FROM lines, and as defaults of ARGs redeclared.
        let mut global: BTreeMap<String, String> = BTreeMap::new();
        let first_from = parsed
            .instructions
            .iter()
            .position(|i| i.keyword == Keyword::From)
            .ok_or_else(|| BuildError::Invalid("the Dockerfile has no FROM".into()))?;
        for i in &parsed.instructions[..first_from] {
            let lookup = |n: &str| global.get(n).cloned();
            for (name, default) in dockerfile::key_values(&text_of(i), escape, &lookup)
                .map_err(|e| step_error(i, e))?
            {
                let value = request.build_args.get(&name).cloned().or(default);
                if request.build_args.contains_key(&name) {
                    used_args.insert(name.clone());
                }
                if let Some(v) = value {
                    global.insert(name, v);
                } else {
                    global.remove(&name);
                }
            }
        }
        // The stages: each FROM and what follows it.
        let mut blocks: Vec<&[Instruction]> = Vec::new();
        let rest = &parsed.instructions[first_from..];
        let mut start = 0;
        for (n, i) in rest.iter().enumerate().skip(1) {
            if i.keyword == Keyword::From {
                blocks.push(&rest[start..n]);
                start = n;
            }
        }
        blocks.push(&rest[start..]);
        let names: Vec<Option<String>> = blocks
            .iter()
            .map(|b| stage_name(&b[0], escape, &global).ok().flatten())
            .collect();
        let last = match &request.target {
            Some(t) => names
                .iter()
                .position(|n| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(t)))
                .ok_or_else(|| {
                    BuildError::Invalid(format!("the target stage {t} is not in the Dockerfile"))
                })?,
            None => blocks.len() - 1,
        };
        let total: usize = blocks[..=last].iter().map(|b| b.len()).sum();
        let mut number = 0;
        let mut stages: Vec<Stage> = Vec::new();
        let mut layer_steps = 0;
        let mut cached_steps = 0;
        for block in &blocks[..=last] {
            let from = &block[0];
            number += 1;
            self.log
                .say(format!("Step {number}/{total} : {}", from.original));
            let mut stage = self.from(from, escape, &global, &stages).await?;
            let triggers = self.triggers(&mut stage, from)?;
            if !triggers.is_empty() {
                self.log
                    .say(format!("# Executing {} build triggers", triggers.len()));
            }
            for (n, i) in triggers.iter().chain(&block[1..]).enumerate() {
                if self.log.gone() {
                    return Err(BuildError::Cancelled);
                }
                if n < triggers.len() {
                    self.log.say(format!("Trigger : {}", i.original));
                } else {
                    number += 1;
                    self.log
                        .say(format!("Step {number}/{total} : {}", i.original));
                }
                match self
                    .step(
                        &mut stage,
                        i,
                        escape,
                        request,
                        &global,
                        &stages,
                        &mut used_args,
                        work,
                    )
                    .await?
                {
                    StepOutcome::Config => {}
                    StepOutcome::Layer { cached } => {
                        layer_steps += 1;
                        if cached {
                            cached_steps += 1;
                            self.log.say(" ---> Using cache");
                        }
                    }
                }
            }
            stages.push(stage);
        }
        let unused: Vec<&String> = request
            .build_args
            .keys()
            .filter(|k| !used_args.contains(*k))
            .collect();
        if !unused.is_empty() {
            self.log.say(format!(
                "[Warning] One or more build-args {unused:?} were not consumed"
            ));
        }
        let result = stages.pop().expect("at least one stage was built");
        // Every step from the cache: the image such a build made before, as docker's builder
        // answers, rather than the same image again with new times.
        let before = if request.no_cache || cached_steps < layer_steps {
            None
        } else {
            self.db
                .build_image_get(&result.key)
                .await
                .map_err(EngineError::from)?
        };
        let digest = match before {
            Some(digest) => {
                for (repository, tag) in tags {
                    self.db
                        .tag_image(&digest, repository, tag)
                        .await
                        .map_err(EngineError::from)?;
                }
                digest
            }
            None => {
                let image = self.engine.record_draft(result.draft, tags).await?;
                self.db
                    .build_image_put(&result.key, &image.digest)
                    .await
                    .map_err(EngineError::from)?;
                image.digest
            }
        };
        let short = digest.trim_start_matches("sha256:");
        self.log.say(format!(
            "Successfully built {}",
            &short[..12.min(short.len())]
        ));
        let names: Vec<String> = tags.iter().map(|(r, t)| format!("{r}:{t}")).collect();
        for name in &names {
            self.log.say(format!("Successfully tagged {name}"));
        }
        Ok(Built {
            digest,
            tags: names,
            layer_steps,
            cached_steps,
        })
    }

    /// `FROM image [AS name]`: a stage's start.
    async fn from(
        &self,
        i: &Instruction,
        escape: char,
        global: &BTreeMap<String, String>,
        stages: &[Stage],
    ) -> Result<Stage, BuildError> {
        for (flag, value) in &i.flags {
            let value = dockerfile::expand_word(value, escape, &|n| global.get(n).cloned())
                .map_err(|e| step_error(i, e))?;
            let host = format!("linux/{}", self.architecture);
            match flag.as_str() {
                // This host's platform is the only one a stage can run on here.
                "platform" if value.is_empty() || value == host => {}
                "platform" => {
                    return Err(step_error(
                        i,
                        format!("--platform={value}: this host builds for {host} only"),
                    ));
                }
                other => {
                    return Err(step_error(
                        i,
                        format!("the flag --{other} is not supported here"),
                    ));
                }
            }
        }
        let words = expand_args(i, escape, &|n| global.get(n).cloned())?;
        let (image, name) = match words.as_slice() {
            [image] => (image.clone(), None),
            [image, r#as, name] if r#as.eq_ignore_ascii_case("as") => {
                (image.clone(), Some(name.to_lowercase()))
            }
            _ => return Err(step_error(i, "give FROM IMAGE [AS NAME]")),
        };
        let shell = vec!["/bin/sh".to_owned(), "-c".to_owned()];
        if image == "scratch" {
            return Ok(Stage {
                name,
                draft: Draft::scratch(self.architecture),
                key: sha256(b"FROM scratch").to_string(),
                args: BTreeMap::new(),
                shell,
                cmd_set: false,
            });
        }
        if let Some(earlier) = stages.iter().find(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(&image))
        }) {
            return Ok(Stage {
                name,
                draft: earlier.draft.clone(),
                key: earlier.key.clone(),
                args: BTreeMap::new(),
                shell: earlier.shell.clone(),
                cmd_set: false,
            });
        }
        let summary = self.image(&image).await.map_err(|e| step_error(i, e))?;
        let draft = self.engine.draft_of(&summary).await?;
        let shell = draft.config["config"]["Shell"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .filter(|s: &Vec<String>| !s.is_empty())
            .unwrap_or(shell);
        Ok(Stage {
            name,
            draft,
            key: sha256(format!("FROM {}", summary.digest).as_bytes()).to_string(),
            args: BTreeMap::new(),
            shell,
            cmd_set: false,
        })
    }

    /// The base's `ONBUILD` triggers, to run first (at the FROM's line), taken out of the
    /// stage's config: they are for the base's children, not for theirs.
    fn triggers(
        &self,
        stage: &mut Stage,
        from: &Instruction,
    ) -> Result<Vec<Instruction>, BuildError> {
        let texts: Vec<String> = stage.draft.config["config"]["OnBuild"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect();
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        stage
            .draft
            .runtime_config()
            .insert("OnBuild".into(), Value::Null);
        let mut out = Vec::new();
        for text in texts {
            let mut parsed =
                dockerfile::parse(&format!("FROM scratch\n{text}\n")).map_err(|e| {
                    step_error(from, format!("the base's ONBUILD {text}: {}", e.reason))
                })?;
            let mut trigger = parsed
                .instructions
                .pop()
                .ok_or_else(|| step_error(from, format!("the base's ONBUILD {text} is empty")))?;
            if matches!(
                trigger.keyword,
                Keyword::From | Keyword::Onbuild | Keyword::Maintainer
            ) {
                return Err(step_error(
                    from,
                    format!(
                        "the base's ONBUILD {text}: {} is not allowed as a trigger",
                        trigger.keyword.name()
                    ),
                ));
            }
            trigger.line = from.line;
            out.push(trigger);
        }
        Ok(out)
    }

    /// A local image by reference.
    async fn image(&self, reference: &str) -> Result<crate::db::ImageSummary, String> {
        let r = ImageRef::parse(reference).map_err(|e| e.to_string())?;
        let found = self
            .db
            .find_image(
                &r.repository,
                r.tag
                    .as_deref()
                    .or(Some("latest"))
                    .filter(|_| r.digest.is_none()),
                r.digest.as_ref().map(|d| d.as_str()),
            )
            .await
            .map_err(|e| e.to_string())?;
        if let Some(found) = found {
            return Ok(found);
        }
        self.pull(reference)
            .await
            .map_err(|e| format!("no such image: {reference}, and pulling it failed: {e}"))
    }

    /// Pulls a base image that is not here, as `docker build` does.
    async fn pull(&self, reference: &str) -> Result<crate::db::ImageSummary, String> {
        self.log.say(format!("Pulling {reference}"));
        let target = crate::images::pull::PullTarget {
            blobs: BlobStore::new(self.layout.blobs()),
            layers: LayerStore::new(self.layout.layers()),
            credentials: crate::images::credentials::CredentialStore::new(
                self.layout.registry_credentials(),
            ),
            insecure_registries: self.insecure_registries.to_vec(),
        };
        let log = self.log.clone();
        let mut report = move |p: crate::images::load::Progress| {
            if let crate::images::load::Progress::Stored { digest, size, .. } = p {
                let short = digest.trim_start_matches("sha256:");
                log.say(format!(
                    " ---> downloaded {} ({size} bytes)",
                    &short[..12.min(short.len())]
                ));
            }
        };
        let loaded = crate::images::pull::pull(reference, &target, &mut report)
            .await
            .map_err(|e| e.to_string())?;
        self.db
            .record_image(&loaded.image, &loaded.tags)
            .await
            .map_err(|e| e.to_string())?;
        self.db
            .find_image("", None, Some(&loaded.image.digest))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{reference} was pulled but is not recorded"))
    }

    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        stage: &mut Stage,
        i: &Instruction,
        escape: char,
        request: &BuildRequest,
        global: &BTreeMap<String, String>,
        stages: &[Stage],
        used_args: &mut HashSet<String>,
        work: &Work,
    ) -> Result<StepOutcome, BuildError> {
        let expanded_text = |stage: &Stage| -> Result<String, BuildError> {
            dockerfile::expand_word(&text_of(i), escape, &|n| stage.lookup(n))
                .map_err(|e| step_error(i, e))
        };
        let note = |stage: &mut Stage, text: String| {
            stage.draft.note(&text);
            stage.advance(&text);
            Ok(StepOutcome::Config)
        };
        match i.keyword {
            Keyword::From => unreachable!("stages start at FROM"),
            Keyword::Run => self.run_step(stage, i, request).await,
            Keyword::Copy | Keyword::Add => {
                self.copy_step(stage, i, escape, request, stages, work)
                    .await
            }
            Keyword::Env => {
                let pairs = dockerfile::key_values(&text_of(i), escape, &|n| stage.lookup(n))
                    .map_err(|e| step_error(i, e))?;
                let mut env = stage.env();
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let v = v.ok_or_else(|| step_error(i, format!("{k} needs a value")))?;
                    env.retain(|e| e.split('=').next() != Some(k.as_str()));
                    env.push(format!("{k}={v}"));
                    shown.push(format!("{k}={v}"));
                }
                stage
                    .draft
                    .runtime_config()
                    .insert("Env".into(), json!(env));
                note(stage, format!("ENV {}", shown.join(" ")))
            }
            Keyword::Arg => {
                let pairs = dockerfile::key_values(&text_of(i), escape, &|n| stage.lookup(n))
                    .map_err(|e| step_error(i, e))?;
                let mut shown = Vec::new();
                for (k, default) in pairs {
                    let value = request
                        .build_args
                        .get(&k)
                        .cloned()
                        .or(default)
                        .or_else(|| global.get(&k).cloned());
                    if request.build_args.contains_key(&k) {
                        used_args.insert(k.clone());
                    }
                    if let Some(v) = value {
                        shown.push(format!("{k}={v}"));
                        stage.args.insert(k, v);
                    } else {
                        shown.push(k.clone());
                    }
                }
                // An ARG changes what later steps see, not the image: no history entry.
                stage.advance(&format!("ARG {}", shown.join(" ")));
                Ok(StepOutcome::Config)
            }
            Keyword::Workdir => {
                let dir = expanded_text(stage)?;
                let joined = normalize(&Path::new(&stage.workdir()).join(&dir));
                stage
                    .draft
                    .runtime_config()
                    .insert("WorkingDir".into(), joined.clone().into());
                note(stage, format!("WORKDIR {joined}"))
            }
            Keyword::User => {
                let user = expanded_text(stage)?;
                crate::engine::user::check(&user).map_err(|e| step_error(i, e))?;
                stage
                    .draft
                    .runtime_config()
                    .insert("User".into(), user.clone().into());
                note(stage, format!("USER {user}"))
            }
            Keyword::Cmd | Keyword::Entrypoint => {
                let command = match &i.args {
                    Args::Json(v) => v.clone(),
                    Args::Text(t) => [stage.shell.clone(), vec![t.clone()]].concat(),
                };
                let key = if i.keyword == Keyword::Cmd {
                    stage.cmd_set = true;
                    "Cmd"
                } else {
                    if !stage.cmd_set {
                        stage
                            .draft
                            .runtime_config()
                            .insert("Cmd".into(), Value::Null);
                    }
                    "Entrypoint"
                };
                stage
                    .draft
                    .runtime_config()
                    .insert(key.into(), json!(command));
                note(stage, format!("{} {}", i.keyword.name(), json!(command)))
            }
            Keyword::Expose => {
                let words = expand_args(i, escape, &|n| stage.lookup(n))?;
                let mut ports = stage.draft.config["config"]["ExposedPorts"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                let mut shown = Vec::new();
                for w in words {
                    let (port, proto) = w.split_once('/').unwrap_or((&w, "tcp"));
                    let proto = proto.to_lowercase();
                    if port.parse::<u16>().is_err()
                        || !matches!(proto.as_str(), "tcp" | "udp" | "sctp")
                    {
                        return Err(step_error(i, format!("{w} is not a port (PORT[/tcp|udp])")));
                    }
                    ports.insert(format!("{port}/{proto}"), json!({}));
                    shown.push(format!("{port}/{proto}"));
                }
                stage
                    .draft
                    .runtime_config()
                    .insert("ExposedPorts".into(), ports.into());
                note(stage, format!("EXPOSE {}", shown.join(" ")))
            }
            Keyword::Label => {
                let pairs = dockerfile::key_values(&text_of(i), escape, &|n| stage.lookup(n))
                    .map_err(|e| step_error(i, e))?;
                let mut labels = stage.draft.config["config"]["Labels"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let v = v.ok_or_else(|| step_error(i, format!("{k} needs a value")))?;
                    shown.push(format!("{k}={v}"));
                    labels.insert(k, v.into());
                }
                stage
                    .draft
                    .runtime_config()
                    .insert("Labels".into(), labels.into());
                note(stage, format!("LABEL {}", shown.join(" ")))
            }
            Keyword::Volume => {
                let paths = match &i.args {
                    Args::Json(v) => v
                        .iter()
                        .map(|p| {
                            dockerfile::expand_word(p, escape, &|n| stage.lookup(n))
                                .map_err(|e| step_error(i, e))
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    Args::Text(_) => expand_args(i, escape, &|n| stage.lookup(n))?,
                };
                let mut volumes = stage.draft.config["config"]["Volumes"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                for p in &paths {
                    if !p.starts_with('/') {
                        return Err(step_error(
                            i,
                            format!("{p}: a volume must be an absolute path"),
                        ));
                    }
                    volumes.insert(p.clone(), json!({}));
                }
                stage
                    .draft
                    .runtime_config()
                    .insert("Volumes".into(), volumes.into());
                note(stage, format!("VOLUME {}", json!(paths)))
            }
            Keyword::Stopsignal => {
                let signal = expanded_text(stage)?;
                crate::runtime::container::parse_signal(&signal).map_err(|e| step_error(i, e))?;
                stage
                    .draft
                    .runtime_config()
                    .insert("StopSignal".into(), signal.clone().into());
                note(stage, format!("STOPSIGNAL {signal}"))
            }
            Keyword::Healthcheck => {
                let check = healthcheck(i).map_err(|e| step_error(i, e))?;
                stage
                    .draft
                    .runtime_config()
                    .insert("Healthcheck".into(), check);
                note(stage, i.original.clone())
            }
            Keyword::Shell => {
                let Args::Json(shell) = &i.args else {
                    return Err(step_error(i, "SHELL needs the JSON form"));
                };
                if shell.is_empty() {
                    return Err(step_error(i, "SHELL needs at least a program"));
                }
                stage.shell = shell.clone();
                stage
                    .draft
                    .runtime_config()
                    .insert("Shell".into(), json!(shell));
                note(stage, format!("SHELL {}", json!(shell)))
            }
            Keyword::Maintainer => {
                let who = expanded_text(stage)?;
                stage.draft.config["author"] = who.clone().into();
                note(stage, format!("MAINTAINER {who}"))
            }
            Keyword::Onbuild => {
                let trigger = text_of(i);
                let mut triggers: Vec<Value> = stage.draft.config["config"]["OnBuild"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                triggers.push(trigger.clone().into());
                stage
                    .draft
                    .runtime_config()
                    .insert("OnBuild".into(), triggers.into());
                note(stage, format!("ONBUILD {trigger}"))
            }
        }
    }

    /// Looks a step up in the cache: the layer, when its blob is still stored.
    async fn cached(
        &self,
        key: &str,
        request: &BuildRequest,
    ) -> Result<Option<NewLayer>, BuildError> {
        if request.no_cache {
            return Ok(None);
        }
        let Some(hit) = self
            .db
            .build_cache_get(key)
            .await
            .map_err(EngineError::from)?
        else {
            return Ok(None);
        };
        let (Ok(blob), Ok(diff_id)) =
            (Digest::parse(&hit.blob_digest), Digest::parse(&hit.diff_id))
        else {
            return Ok(None);
        };
        if !BlobStore::new(self.layout.blobs()).exists(&blob) {
            return Ok(None);
        }
        Ok(Some(NewLayer {
            blob,
            diff_id,
            size: hit.size.max(0) as u64,
        }))
    }

    async fn remember(&self, key: &str, layer: &NewLayer) -> Result<(), BuildError> {
        self.db
            .build_cache_put(
                key,
                &CachedLayer {
                    blob_digest: layer.blob.to_string(),
                    diff_id: layer.diff_id.to_string(),
                    size: layer.size as i64,
                },
            )
            .await
            .map_err(EngineError::from)?;
        Ok(())
    }

    async fn run_step(
        &self,
        stage: &mut Stage,
        i: &Instruction,
        request: &BuildRequest,
    ) -> Result<StepOutcome, BuildError> {
        if let Some((flag, _)) = i.flags.first() {
            return Err(step_error(
                i,
                format!(
                    "the flag --{flag} is not supported here (this builder is docker's classic one, without BuildKit's RUN flags)"
                ),
            ));
        }
        let argv = match &i.args {
            Args::Json(v) if !v.is_empty() => v.clone(),
            Args::Json(_) => return Err(step_error(i, "RUN [] runs nothing")),
            Args::Text(t) => [stage.shell.clone(), vec![t.clone()]].concat(),
        };
        // The build args in scope reach the command as environment (ENV wins over them).
        let env_keys: HashSet<String> = stage
            .env()
            .iter()
            .filter_map(|e| e.split('=').next().map(str::to_owned))
            .collect();
        let arg_env: Vec<String> = stage
            .args
            .iter()
            .filter(|(k, _)| !env_keys.contains(*k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let created_by = if arg_env.is_empty() {
            format!("RUN {}", argv.join(" "))
        } else {
            format!(
                "RUN |{} {} {}",
                arg_env.len(),
                arg_env.join(" "),
                argv.join(" ")
            )
        };
        stage.advance(&format!("{created_by}\n{}", json!(argv)));
        if let Some(layer) = self.cached(&stage.key, request).await? {
            stage.draft.add_layer(&layer, &created_by, None);
            return Ok(StepOutcome::Layer { cached: true });
        }
        let layer = self.run_in_container(stage, i, &argv, &arg_env).await?;
        self.remember(&stage.key, &layer).await?;
        stage.draft.add_layer(&layer, &created_by, None);
        Ok(StepOutcome::Layer { cached: false })
    }

    /// Runs `argv` in a container of the image so far; its writable layer.
    async fn run_in_container(
        &self,
        stage: &Stage,
        i: &Instruction,
        argv: &[String],
        arg_env: &[String],
    ) -> Result<NewLayer, BuildError> {
        // An image of this step alone: another build of the same Dockerfile in the same second
        // would otherwise make the same one, and remove it under this step.
        let mut draft = stage.draft.clone();
        draft.config["wharf.build.step"] = uuid::Uuid::new_v4().simple().to_string().into();
        let image = self.engine.record_draft(draft, &[]).await?;
        let config = ContainerConfig {
            image: image.digest.clone(),
            entrypoint: vec![argv[0].clone()],
            cmd: argv[1..].to_vec(),
            env: arg_env.to_vec(),
            healthcheck: Some(crate::engine::health::Healthcheck {
                test: vec!["NONE".into()],
                ..Default::default()
            }),
            labels: [(STEP_LABEL.to_owned(), i.line.to_string())].into(),
            ..ContainerConfig::default()
        };
        let made = self.engine.create(None, config).await;
        let row = match made {
            Ok(row) => row,
            Err(e) => {
                self.forget_intermediate(&image.digest).await;
                return Err(step_error(i, e));
            }
        };
        let outcome = self.run_container(&row.id, i, argv).await;
        let layer = match outcome {
            Ok(()) => self
                .engine
                .capture_layer(&row.id)
                .await
                .map_err(|e| step_error(i, e)),
            Err(e) => Err(e),
        };
        if let Err(e) = self.engine.remove(&row.id, true, true).await {
            tracing::warn!(container = %row.id, error = %e, "could not remove a build step's container");
        }
        self.forget_intermediate(&image.digest).await;
        layer
    }

    /// Starts the step's container, streams its output, and checks its exit code.
    async fn run_container(
        &self,
        id: &str,
        i: &Instruction,
        argv: &[String],
    ) -> Result<(), BuildError> {
        self.engine.start(id).await.map_err(|e| step_error(i, e))?;
        let path = self.engine.log_path(id);
        let query = crate::engine::logs::LogQuery {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let mut position = crate::engine::logs::Position::default();
        let mut exited = self.engine.exit_watch(id).await;
        loop {
            let done = exited.as_ref().is_none_or(|rx| rx.borrow().is_some());
            if let Ok((entries, next)) =
                crate::engine::logs::read_from(&path, position, &query).await
            {
                position = next;
                for e in entries {
                    let _ = self.log.0.send(json!({ "stream": e.log }));
                }
            }
            if done {
                break;
            }
            if self.log.gone() {
                let _ = self.engine.kill(id, "KILL").await;
                return Err(BuildError::Cancelled);
            }
            match &mut exited {
                Some(rx) => {
                    tokio::select! {
                        _ = rx.changed() => {}
                        _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                    }
                }
                None => break,
            }
        }
        let code = self.engine.wait(id).await.map_err(|e| step_error(i, e))?;
        if code != 0 {
            return Err(step_error(
                i,
                format!(
                    "the command '{}' returned a non-zero code: {code}",
                    argv.join(" ")
                ),
            ));
        }
        Ok(())
    }

    /// Removes the untagged image a step's container ran from (kept if anything names it).
    async fn forget_intermediate(&self, digest: &str) {
        if let Ok(Some(image)) = self.db.find_image("", None, Some(digest)).await
            && image.tags.is_empty()
            && self
                .db
                .containers_of_image(digest)
                .await
                .is_ok_and(|c| c.is_empty())
        {
            let _ = self.db.untag_image("", None, Some(digest)).await;
        }
    }

    async fn copy_step(
        &self,
        stage: &mut Stage,
        i: &Instruction,
        escape: char,
        request: &BuildRequest,
        stages: &[Stage],
        work: &Work,
    ) -> Result<StepOutcome, BuildError> {
        let mut from = None;
        let mut chown = None;
        for (flag, value) in &i.flags {
            match flag.as_str() {
                "from" if i.keyword == Keyword::Copy => from = Some(value.clone()),
                "chown" => {
                    chown = Some(
                        dockerfile::expand_word(value, escape, &|n| stage.lookup(n))
                            .map_err(|e| step_error(i, e))?,
                    )
                }
                "link" => {}
                other => {
                    return Err(step_error(
                        i,
                        format!("the flag --{other} is not supported here"),
                    ));
                }
            }
        }
        let mut words = match &i.args {
            Args::Json(v) => v
                .iter()
                .map(|w| {
                    dockerfile::expand_word(w, escape, &|n| stage.lookup(n))
                        .map_err(|e| step_error(i, e))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Args::Text(_) => expand_args(i, escape, &|n| stage.lookup(n))?,
        };
        if words.len() < 2 {
            return Err(step_error(i, "give at least one source and a destination"));
        }
        let dest_text = words.pop().expect("two words at least");
        if i.keyword == Keyword::Add
            && let Some(url) = words
                .iter()
                .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        {
            return Err(step_error(
                i,
                format!("{url}: ADD from a URL is not supported; fetch it with RUN wget instead"),
            ));
        }
        // Where the sources come from: the context, an earlier stage, or an image.
        let build_dir = work.dir.clone();
        let source_root: SourceRoot = match &from {
            None => SourceRoot::Context(Arc::clone(&work.context)),
            Some(name) => {
                let earlier = stages.iter().enumerate().find(|(n, s)| {
                    s.name
                        .as_deref()
                        .is_some_and(|s| s.eq_ignore_ascii_case(name))
                        || n.to_string() == *name
                });
                let draft = match earlier {
                    Some((_, s)) => s.draft.clone(),
                    None => {
                        let summary = self.image(name).await.map_err(|e| {
                            step_error(i, format!("--from={name}: no such stage, and {e}"))
                        })?;
                        self.engine.draft_of(&summary).await?
                    }
                };
                SourceRoot::Layers(draft)
            }
        };
        let workdir = stage.workdir();
        // As docker reads a destination: a directory when it ends in `/` or is `.`, or when
        // there are several sources.
        let dest_is_dir = dest_text.ends_with('/')
            || dest_text == "."
            || dest_text.ends_with("/.")
            || words.len() > 1;
        let dest = PathBuf::from(normalize(&Path::new(&workdir).join(&dest_text)));
        let step_dir = build_dir.join(format!("step-{}", i.line));
        let blobs = BlobStore::new(self.layout.blobs());
        let layers = LayerStore::new(self.layout.layers());
        let target = stage.draft.clone();
        let keyword = i.keyword;
        let line = i.line;
        let sources = words.clone();
        let prev_key = stage.key.clone();
        let chown_text = chown.clone();
        let dest_for_task = dest.clone();
        // 1. Mount the source (for --from) and resolve the sources; hash them for the key.
        let prepared = tokio::task::spawn_blocking(move || -> Result<Prepared, String> {
            std::fs::create_dir_all(&step_dir).map_err(|e| e.to_string())?;
            let (root_dir, source_mount, identity) = match &source_root {
                SourceRoot::Context(_) => (None, None, "context".to_owned()),
                SourceRoot::Layers(draft) => {
                    // Read from; what a copy might write there goes to a scratch upper directory.
                    let mounted = mount_draft(draft, &blobs, &layers, &step_dir.join("from"))?;
                    let top = chain_ids(
                        &draft
                            .layers
                            .iter()
                            .map(|l| l.diff_id.clone())
                            .collect::<Vec<_>>(),
                    )
                    .last()
                    .map_or("empty".to_owned(), |c| c.to_string());
                    (Some(mounted.0.clone()), Some(mounted), top)
                }
            };
            let mut resolved = Vec::new();
            for source in &sources {
                let matched = if context::has_wildcard(source) {
                    let m = match (&source_root, &root_dir) {
                        (SourceRoot::Context(ctx), _) => ctx.glob(source)?,
                        (_, Some(dir)) => context::glob_dir(dir, source)?,
                        (_, None) => Vec::new(),
                    };
                    if m.is_empty() {
                        return Err(format!("{source}: no file in the build context matches"));
                    }
                    m
                } else {
                    vec![source.clone()]
                };
                for m in matched {
                    let path = match (&source_root, &root_dir) {
                        (SourceRoot::Context(ctx), _) => ctx.resolve(&m)?,
                        // An image's own links are its business: they resolve inside it.
                        (_, Some(dir)) => resolve_in_image(dir, &m)?,
                        (_, None) => return Err("no source for the copy".into()),
                    };
                    // A file keeps the name it was given, not its link's target's.
                    let name = Path::new(&m)
                        .file_name()
                        .map(|n| n.to_os_string())
                        .unwrap_or_default();
                    resolved.push((path, name));
                }
            }
            let mut key_text = format!(
                "{} {identity} chown={chown_text:?} dest={} dest_is_dir={dest_is_dir}",
                keyword.name(),
                dest_for_task.display()
            );
            for (path, name) in &resolved {
                let content = match &source_root {
                    SourceRoot::Context(ctx) => ctx.content_digest(path),
                    SourceRoot::Layers(_) => String::new(),
                };
                key_text.push_str(&format!(
                    "\n{} as {} {content}",
                    path.display(),
                    name.to_string_lossy()
                ));
            }
            let key = sha256(format!("{prev_key}\n{key_text}").as_bytes()).to_string();
            Ok(Prepared {
                root_dir,
                context: match source_root {
                    SourceRoot::Context(ctx) => Some(ctx),
                    SourceRoot::Layers(_) => None,
                },
                _source_mount: source_mount,
                resolved,
                key,
                target,
                step_dir,
            })
        })
        .await
        .map_err(blocking_failed)?
        .map_err(|e| step_error(i, e))?;
        let created_by = format!(
            "{} {}{} {}",
            i.keyword.name(),
            chown
                .as_ref()
                .map(|c| format!("--chown={c} "))
                .unwrap_or_default(),
            words.join(" "),
            dest.display()
        );
        stage.key = prepared.key.clone();
        if let Some(layer) = self.cached(&stage.key, request).await? {
            stage.draft.add_layer(&layer, &created_by, None);
            return Ok(StepOutcome::Layer { cached: true });
        }
        // 2. Copy into an overlay of the image so far; its upper directory is the layer.
        let blobs = BlobStore::new(self.layout.blobs());
        let layers = LayerStore::new(self.layout.layers());
        let layer = tokio::task::spawn_blocking(move || -> Result<NewLayer, String> {
            let p = prepared;
            let upper = p.step_dir.join("upper");
            let mounted = mount_draft(&p.target, &blobs, &layers, &p.step_dir)?;
            let to = Root::open(&mounted.0).map_err(|e| e.to_string())?;
            let root_dir = match (&p.root_dir, &p.context) {
                (Some(dir), _) => dir.clone(),
                (None, Some(ctx)) => ctx.unpacked()?.to_owned(),
                (None, None) => return Err("no source for the copy".into()),
            };
            let from = Root::open(&root_dir).map_err(|e| e.to_string())?;
            // Everything about a source is looked at inside its root.
            let is_dir = |path: &Path| from.open_at(path, libc::O_PATH | libc::O_DIRECTORY).is_ok();
            let archive_file = |path: &Path| {
                (keyword == Keyword::Add)
                    .then(|| {
                        from.open_at(path, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK)
                            .ok()
                    })
                    .flatten()
                    .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
                    .filter(is_archive)
            };
            let owners = match &chown {
                None => Owners::Root,
                Some(spec) => chown_ids(spec, &mounted.0)?,
            };
            let first = &p.resolved[0].0;
            let single_file = p.resolved.len() == 1
                && !dest_is_dir
                && !is_dir(first)
                && to.open_at(&dest, libc::O_PATH | libc::O_DIRECTORY).is_err();
            if single_file && archive_file(first).is_none() {
                let parent = dest.parent().unwrap_or(Path::new("/"));
                make_dirs(&to, parent, owners)?;
                let name = dest.file_name().ok_or("the destination has no file name")?;
                archive::copy_between(&from, first, &to, parent, Some(name), owners)
                    .map_err(|e| format!("copy {}: {e}", first.display()))?;
            } else {
                make_dirs(&to, &dest, owners)?;
                for (source, name) in &p.resolved {
                    if let Some(file) = archive_file(source) {
                        let reader = crate::images::unpack::decompressed(file)
                            .map_err(|e| format!("{}: {e}", source.display()))?;
                        let owners = if chown.is_some() {
                            owners
                        } else {
                            Owners::Keep
                        };
                        archive::extract_tar(&to, &dest, reader, owners)
                            .map_err(|e| format!("extract {}: {e}", source.display()))?;
                        continue;
                    }
                    archive::copy_between(&from, source, &to, &dest, Some(name), owners)
                        .map_err(|e| format!("copy {}: {e}", source.display()))?;
                }
            }
            drop(to);
            drop(mounted);
            let layer = store_layer(&blobs, |w| archive::write_layer(&upper, w))
                .map_err(|e| e.to_string())?;
            let step_dir = p.step_dir.clone();
            drop(p); // unmounts the --from source first
            let _ = std::fs::remove_dir_all(&step_dir);
            Ok(layer)
        })
        .await
        .map_err(blocking_failed)?
        .map_err(|e| BuildError::Step {
            line,
            keyword: keyword.name(),
            reason: e,
        })?;
        self.remember(&stage.key, &layer).await?;
        stage.draft.add_layer(&layer, &created_by, None);
        Ok(StepOutcome::Layer { cached: false })
    }
}

/// A build's directory and its context.
struct Work {
    dir: PathBuf,
    context: Arc<Context>,
}

enum StepOutcome {
    Config,
    Layer { cached: bool },
}

enum SourceRoot {
    Context(Arc<Context>),
    Layers(Draft),
}

struct Prepared {
    /// The mounted image of `COPY --from`; the context's directory is unpacked when needed.
    root_dir: Option<PathBuf>,
    context: Option<Arc<Context>>,
    _source_mount: Option<Mounted>,
    /// Each source, resolved, and the name it was given.
    resolved: Vec<(PathBuf, std::ffi::OsString)>,
    key: String,
    target: Draft,
    step_dir: PathBuf,
}

/// The text of an instruction's arguments.
fn text_of(i: &Instruction) -> String {
    match &i.args {
        Args::Text(t) => t.clone(),
        Args::Json(v) => v.join(" "),
    }
}

fn expand_args(
    i: &Instruction,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, BuildError> {
    dockerfile::expand_words(&text_of(i), escape, lookup).map_err(|e| step_error(i, e))
}

/// The `AS name` of a FROM line.
fn stage_name(
    i: &Instruction,
    escape: char,
    global: &BTreeMap<String, String>,
) -> Result<Option<String>, BuildError> {
    let words = expand_args(i, escape, &|n| global.get(n).cloned())?;
    Ok(match words.as_slice() {
        [_, r#as, name] if r#as.eq_ignore_ascii_case("as") => Some(name.to_lowercase()),
        _ => None,
    })
}

/// `/a/./b/../c` as `/a/c` (never above `/`).
fn normalize(path: &Path) -> String {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => parts.push(n),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    let joined: PathBuf = parts.iter().collect();
    format!("/{}", joined.display())
}

/// HEALTHCHECK `[flags] CMD command` or `NONE`, as the image config holds it.
fn healthcheck(i: &Instruction) -> Result<Value, String> {
    let text = text_of(i);
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") {
        return Ok(json!({"Test": ["NONE"]}));
    }
    let Some(command) = text
        .strip_prefix("CMD")
        .or_else(|| text.strip_prefix("cmd"))
        .filter(|rest| rest.starts_with(char::is_whitespace) || rest.starts_with('['))
    else {
        return Err("give HEALTHCHECK [OPTIONS] CMD command, or HEALTHCHECK NONE".into());
    };
    let test = match dockerfile::command_form(command) {
        Args::Json(v) => [vec!["CMD".to_owned()], v].concat(),
        Args::Text(t) => vec!["CMD-SHELL".to_owned(), t],
    };
    let mut check = json!({ "Test": test });
    for (flag, value) in &i.flags {
        let field = match flag.as_str() {
            "interval" => "Interval",
            "timeout" => "Timeout",
            "start-period" => "StartPeriod",
            "start-interval" => "StartInterval",
            "retries" => {
                let n: u32 = value
                    .parse()
                    .map_err(|_| format!("--retries={value} is not a number"))?;
                check["Retries"] = n.into();
                continue;
            }
            other => return Err(format!("the flag --{other} is not a HEALTHCHECK option")),
        };
        let d = humantime::parse_duration(value).map_err(|e| format!("--{flag}={value}: {e}"))?;
        check[field] = (d.as_nanos() as u64).into();
    }
    Ok(check)
}

/// Mounts the image `draft` at `dir/rootfs` with `dir/upper` as its writable layer.
fn mount_draft(
    draft: &Draft,
    blobs: &BlobStore,
    layers: &LayerStore,
    dir: &Path,
) -> Result<Mounted, String> {
    let diff_ids: Vec<Digest> = draft.layers.iter().map(|l| l.diff_id.clone()).collect();
    let stack: Vec<StackLayer> = draft
        .layers
        .iter()
        .zip(chain_ids(&diff_ids))
        .map(|(l, chain)| StackLayer {
            chain,
            diff: l.diff_id.clone(),
            blob: l.blob.clone(),
        })
        .collect();
    layers
        .mount_stack(blobs, &stack, dir)
        .map(Mounted)
        .map_err(|e| e.to_string())
}

/// `mkdir -p` of `path` inside `root` (mode 0755); what it makes gets `--chown`'s owner,
/// as docker gives it, or root's.
fn make_dirs(root: &Root, path: &Path, owners: Owners) -> Result<(), String> {
    let mut so_far = PathBuf::from("/");
    for part in path
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
    {
        so_far.push(part);
        if root.open_at(&so_far, libc::O_PATH).is_ok() {
            continue;
        }
        let made = root
            .resolve(&so_far, crate::runtime::inroot::Make::Dir)
            .map_err(|e| format!("make {}: {e}", so_far.display()))?;
        if let Owners::Set(uid, gid) = owners {
            nix::unistd::fchownat(
                &made,
                "",
                Some(uid.into()),
                Some(gid.into()),
                nix::fcntl::AtFlags::AT_EMPTY_PATH,
            )
            .map_err(|e| format!("give {} to {uid}:{gid}: {e}", so_far.display()))?;
        }
    }
    Ok(())
}

/// `--chown=user[:group]`: numbers as they are (a lone uid is its own gid), names from the
/// image's /etc/passwd and /etc/group.
fn chown_ids(spec: &str, rootfs: &Path) -> Result<Owners, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let numeric = |s: &str| s.parse::<u32>().ok();
    if let (Some(uid), None) = (numeric(user), group) {
        return Ok(Owners::Set(uid, uid));
    }
    if let (Some(uid), Some(Some(gid))) = (numeric(user), group.map(numeric)) {
        return Ok(Owners::Set(uid, gid));
    }
    let identity = crate::engine::user::resolve_in(rootfs, spec)
        .map_err(|e| format!("--chown={spec}: {e}"))?;
    Ok(Owners::Set(identity.uid, identity.gid))
}

/// Whether a file is a tar (plain, or in gzip or zstd) that ADD extracts: its first block,
/// decompressed, has the ustar magic. A compressed file of anything else is copied as it is.
fn is_archive(file: &std::fs::File) -> bool {
    use std::io::{Read, Seek};
    let Ok(mut reader) = file.try_clone() else {
        return false;
    };
    let mut head = Vec::with_capacity(512);
    let read = reader.seek(std::io::SeekFrom::Start(0)).is_ok()
        && crate::images::unpack::decompressed(&mut reader)
            .and_then(|d| d.take(512).read_to_end(&mut head))
            .is_ok();
    // The clone shares the file's offset: put it back at the start for the extraction.
    let _ = reader.seek(std::io::SeekFrom::Start(0));
    read && head.len() >= 262 && &head[257..262] == b"ustar"
}

/// `path` of an image mounted at `root`, every link in it (the last too) followed inside the
/// image: the path it names, relative to the root.
fn resolve_in_image(root: &Path, path: &str) -> Result<PathBuf, String> {
    let image = Root::open(root).map_err(|e| e.to_string())?;
    let found = image
        .open_at(Path::new(path), libc::O_PATH)
        .map_err(|e| format!("{path}: {e} in the --from image"))?;
    let real = std::fs::read_link(crate::runtime::inroot::fd_path(&found))
        .map_err(|e| format!("{path}: {e}"))?;
    real.strip_prefix(root)
        .map(Path::to_path_buf)
        .map_err(|_| format!("{path}: resolves outside the --from image"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_under_the_root() {
        assert_eq!(normalize(Path::new("/app/./src/../bin")), "/app/bin");
        assert_eq!(normalize(Path::new("/../../x")), "/x");
        assert_eq!(normalize(Path::new("/")), "/");
    }

    #[test]
    fn chown_takes_numbers_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            chown_ids("1000", dir.path()).unwrap(),
            Owners::Set(1000, 1000)
        );
        assert_eq!(chown_ids("10:20", dir.path()).unwrap(), Owners::Set(10, 20));
    }

    #[test]
    fn archives_are_told_by_their_first_block() {
        let dir = tempfile::tempdir().unwrap();
        let open = |p: &Path| std::fs::File::open(p).unwrap();
        let gzip = |bytes: &[u8]| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, bytes).unwrap();
            gz.finish().unwrap()
        };
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        b.append_data(&mut h, "x", &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        for (name, bytes, wanted) in [
            ("a.tar", tar.clone(), true),
            ("a.tgz", gzip(&tar), true),
            ("a.txt.gz", gzip(b"hello, not a tar"), false),
            ("a.txt", b"hello".to_vec(), false),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let file = open(&path);
            assert_eq!(is_archive(&file), wanted, "{name}");
            let mut again = Vec::new();
            std::io::Read::read_to_end(&mut &file, &mut again).unwrap();
            assert_eq!(
                again,
                std::fs::read(&path).unwrap(),
                "{name} is read from its start after"
            );
        }
    }
}
