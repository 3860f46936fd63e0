//! The stage machinery of `distill-edge build`: a [`Stage`] says what it reads, what its
//! artifacts depend on and how to produce them; [`run_stages`] derives the order, `--from`,
//! the fingerprints and the up-to-date checks from one list of stages.
//!
//! A stage's fingerprint hashes its name, its own inputs ([`Stage::inputs`]) and the
//! fingerprints of the stages it [needs](Stage::needs), so a change anywhere upstream reaches
//! every stage after it. A stage runs only when its fingerprint changed, an artifact is missing
//! or corrupt, or `--from` forces it. Work happens in `<run dir>/<stage>.partial/` (marked with
//! the fingerprint it is for, so a killed stage resumes and a stale one starts over) and is
//! swapped in only when the stage succeeds: a failed stage keeps the previous good artifacts.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use crate::data::split::ValidationSplit;
use crate::data::{self, DataSource, Splits};
use crate::fsutil::{DirLock, clean_stale_temps, sha256_file, sha256_hex, write_json_atomic};
use crate::progress::Reporter;
use crate::runtime::Backend;

/// File recording a finished stage.
pub const STAGE_FILE: &str = "stage.json";
/// Per-stage log.
pub const LOG_FILE: &str = "stage.log";
/// The fingerprint a partial directory is for.
const MARKER_FILE: &str = ".fingerprint";

/// One step of the build, producing files in its own directory `<run dir>/<name>/`.
pub trait Stage {
    /// Unique name; also its directory under the run directory.
    fn name(&self) -> String;
    /// The stages whose artifacts it reads; they must come earlier in the list, and their
    /// fingerprints are part of this one's.
    fn needs(&self) -> Vec<String>;
    /// Everything else its artifacts depend on (config sections, seed, tool versions).
    fn inputs(&self) -> Result<serde_json::Value>;
    /// Produces the artifacts in `dir` (the partial directory, possibly holding the work of a
    /// killed run with the same fingerprint to resume from).
    fn run(&self, ctx: &Context, dir: &Path, reporter: &mut Reporter) -> Result<()>;
    /// Files (relative to its directory) the stage must produce, e.g. a training stage's
    /// `model.ckpt`: a run that did not write them failed, and a recorded stage missing one is
    /// not up to date. Whatever a stage declares, it must produce at least one artifact.
    fn required_artifacts(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Builds the value of [`Stage::inputs`] key by key; a value that does not serialise is an
/// error naming its key.
#[derive(Debug, Default)]
pub struct Inputs(serde_json::Map<String, serde_json::Value>);

impl Inputs {
    /// Adds `key = value`.
    pub fn add(mut self, key: &str, value: &impl Serialize) -> Result<Self> {
        let v = serde_json::to_value(value)
            .with_context(|| format!("fingerprint input `{key}` does not serialise"))?;
        self.0.insert(key.to_string(), v);
        Ok(self)
    }

    /// Adds `key = value` when `value` is `Some`; nothing otherwise, so a new optional
    /// setting left unset keeps the fingerprints of configs written before it existed.
    pub fn add_some<T: Serialize>(self, key: &str, value: &Option<T>) -> Result<Self> {
        match value {
            Some(v) => self.add(key, v),
            None => Ok(self),
        }
    }

    /// The finished value.
    pub fn done(self) -> serde_json::Value {
        serde_json::Value::Object(self.0)
    }
}

/// What stages share while the build runs: the run directory and the dataset (loaded on first
/// use, so a build with nothing to do never loads it).
pub struct Context {
    root: PathBuf,
    data: DataSource,
    validation: Option<ValidationSplit>,
    splits: RefCell<Option<Loaded>>,
    terminal: Reporter,
    quiet: bool,
    verbose: bool,
    backend: Backend,
    devices: usize,
}

impl Context {
    /// A context for the run directory `root`; `verbose` echoes stage logs to the terminal,
    /// `quiet` prints nothing but errors.
    pub fn new(root: PathBuf, data: DataSource, quiet: bool, verbose: bool) -> Self {
        Self {
            root,
            data,
            validation: None,
            splits: RefCell::new(None),
            terminal: Reporter::new(quiet),
            quiet,
            verbose,
            backend: Backend::Cpu,
            devices: 1,
        }
    }

    /// The same context with the training stages on `devices` devices of `backend`.
    pub fn with_compute(mut self, backend: Backend, devices: usize) -> Self {
        self.backend = backend;
        self.devices = devices;
        self
    }

    /// Where the training stages train and evaluate: the backend and how many of its devices
    /// train data-parallel.
    pub fn compute(&self) -> (Backend, usize) {
        (self.backend, self.devices)
    }

    /// The run directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The (finished) directory of a stage.
    pub fn dir(&self, stage: &str) -> PathBuf {
        self.root.join(stage)
    }

    /// Holds `split` out of the training split: [`Self::splits`] then trains on the rest, and
    /// [`Self::validation_splits`] evaluates on it.
    pub fn with_validation(mut self, split: Option<ValidationSplit>) -> Self {
        self.validation = split;
        self
    }

    fn loaded(&self) -> Result<Loaded> {
        if let Some(l) = self.splits.borrow().as_ref() {
            return Ok(l.clone());
        }
        self.terminal
            .line(format!("loading {} data", self.data.name()));
        let all = data::load(&self.data)?;
        let l = match &self.validation {
            None => Loaded {
                training: Rc::new(all),
                validation: None,
            },
            Some(v) => {
                let held = data::split::hold_out(&all, v)?;
                Loaded {
                    training: Rc::new(held.for_test()),
                    validation: Some(Rc::new(held.for_validation())),
                }
            }
        };
        *self.splits.borrow_mut() = Some(l.clone());
        Ok(l)
    }

    /// The dataset, loaded on first use: the training split (without the validation images,
    /// when the config holds some out) and the test split.
    pub fn splits(&self) -> Result<Rc<Splits>> {
        Ok(self.loaded()?.training)
    }

    /// What a training stage trains on: the training images, and the images its per-epoch
    /// figures are measured on: the validation images when the config holds some out (so the
    /// test split is looked at only by the final evaluation), else the test split.
    pub fn training_splits(&self) -> Result<Rc<Splits>> {
        let l = self.loaded()?;
        Ok(l.validation.unwrap_or(l.training))
    }

    /// With a `[validation]` split: the training images and the validation images as the
    /// evaluation split (retrieval's database is the training images without them).
    pub fn validation_splits(&self) -> Result<Option<Rc<Splits>>> {
        Ok(self.loaded()?.validation)
    }

    /// The dataset as loaded, if a stage loaded it: `fashion-mnist (55000 train / 5000
    /// validation / 10000 test, 1x28x28)`.
    pub fn describe_loaded(&self) -> Option<String> {
        let l = self.splits.borrow().clone()?;
        let s = &l.training;
        Some(match &l.validation {
            None => s.describe(self.data.name()),
            Some(v) => format!(
                "{} ({} train / {} validation / {} test, {})",
                self.data.name(),
                s.train.len(),
                v.test.len(),
                s.test.len(),
                s.train.shape
            ),
        })
    }
}

/// The dataset as the stages see it.
#[derive(Clone)]
struct Loaded {
    training: Rc<Splits>,
    validation: Option<Rc<Splits>>,
}

/// What `stage.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageRecord {
    /// Stage name.
    pub stage: String,
    /// Fingerprint of its inputs.
    pub fingerprint: String,
    /// Wall time of the run that produced it.
    pub seconds: f64,
    /// (path relative to the stage dir, sha256).
    pub artifacts: Vec<(String, String)>,
}

/// How a stage ended in this invocation.
pub mod status {
    /// It ran and succeeded.
    pub const BUILT: &str = "built";
    /// Its artifacts were current.
    pub const UP_TO_DATE: &str = "up to date";
    /// It ran and failed.
    pub const FAILED: &str = "failed";
    /// An earlier stage failed.
    pub const SKIPPED: &str = "skipped";
}

/// One stage's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct StageOutcome {
    /// Stage name.
    pub stage: String,
    /// `built`, `up to date`, `failed` or `skipped` (see [`status`]).
    pub status: String,
    /// Seconds this invocation spent on it.
    pub seconds: f64,
    /// Its directory; for a failed stage, its partial directory (what the failed run wrote).
    pub dir: PathBuf,
    /// Fingerprint.
    pub fingerprint: String,
    /// Artifacts (relative paths).
    pub artifacts: Vec<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every stage's outcome, and the error of the stage that failed (the stages after it are
/// skipped).
#[derive(Debug)]
pub struct StagesRun {
    /// In order.
    pub outcomes: Vec<StageOutcome>,
    /// The failed stage's error, with its log's path.
    pub failure: Option<anyhow::Error>,
    /// The run directory's lock: whoever writes the report from this run keeps it until then.
    pub lock: DirLock,
}

/// The fingerprint of a stage: its name, inputs and upstream fingerprints.
pub fn fingerprint(
    name: &str,
    inputs: &serde_json::Value,
    upstream: &[(String, String)],
) -> Result<String> {
    let value = serde_json::json!({ "stage": name, "inputs": inputs, "upstream": upstream });
    let text = serde_json::to_string(&value)
        .with_context(|| format!("stage {name}: fingerprint inputs do not serialise"))?;
    Ok(sha256_hex(text.as_bytes())[..16].to_string())
}

/// The stage names in order, checking that names are unique and every stage's needs come
/// before it.
pub fn order(stages: &[Box<dyn Stage>]) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::with_capacity(stages.len());
    for s in stages {
        let name = s.name();
        if names.contains(&name) {
            bail!("internal: two stages are named {name}");
        }
        for n in s.needs() {
            if !names.contains(&n) {
                bail!("internal: stage {name} needs {n}, which does not come before it");
            }
        }
        names.push(name);
    }
    Ok(names)
}

/// Every stage's fingerprint, in order.
pub fn fingerprints(stages: &[Box<dyn Stage>]) -> Result<Vec<String>> {
    let names = order(stages)?;
    let mut fps: Vec<String> = Vec::with_capacity(stages.len());
    for (s, name) in stages.iter().zip(&names) {
        let upstream: Vec<(String, String)> = s
            .needs()
            .into_iter()
            .map(|n| {
                let i = names
                    .iter()
                    .position(|o| *o == n)
                    .expect("checked by order");
                (n, fps[i].clone())
            })
            .collect();
        fps.push(fingerprint(name, &s.inputs()?, &upstream)?);
    }
    Ok(fps)
}

/// Index of the first stage `--from` forces; an unknown name is an error listing the stages.
pub fn from_index(names: &[String], from: Option<&str>) -> Result<Option<usize>> {
    let Some(from) = from else {
        return Ok(None);
    };
    match names.iter().position(|n| n == from) {
        Some(i) => Ok(Some(i)),
        None => bail!(
            "--from {from}: no such stage; the stages are: {}",
            names.join(", ")
        ),
    }
}

/// Runs every stage that is not up to date (or is at or after `from`), in order, until one
/// fails. The run directory is locked ([`DirLock`]) for the whole run: a second build of the
/// same directory is refused at once, naming the holder's pid; temporary files killed runs
/// left there are removed first. An error is returned only for problems before any stage runs
/// (an unknown `--from`, fingerprint inputs that do not serialise, a locked run directory); a
/// failing stage is reported in [`StagesRun::failure`], with the later stages marked skipped.
pub fn run_stages(
    stages: &[Box<dyn Stage>],
    ctx: &Context,
    from: Option<&str>,
) -> Result<StagesRun> {
    let names = order(stages)?;
    let forced_from = from_index(&names, from)?;
    let fps = fingerprints(stages)?;
    // One build at a time per run directory; held until every stage has run.
    let lock = DirLock::acquire(&ctx.root, "build")?;
    let removed = clean_stale_temps(&ctx.root)
        .with_context(|| format!("removing temporary files in {}", ctx.root.display()))?;
    if !removed.is_empty() {
        ctx.terminal.line(format!(
            "removed {} temporary file(s) left by a killed run in {}",
            removed.len(),
            ctx.root.display()
        ));
    }
    let mut outcomes = Vec::with_capacity(stages.len());
    let mut failure = None;
    for (i, stage) in stages.iter().enumerate() {
        let (name, fp) = (&names[i], &fps[i]);
        if failure.is_some() {
            outcomes.push(StageOutcome {
                stage: name.clone(),
                status: status::SKIPPED.into(),
                seconds: 0.0,
                dir: ctx.dir(name),
                fingerprint: fp.clone(),
                artifacts: Vec::new(),
                error: None,
            });
            continue;
        }
        let forced = forced_from.is_some_and(|f| i >= f);
        let (outcome, error) = run_one(stage.as_ref(), name, fp, forced, ctx);
        outcomes.push(outcome);
        failure = error;
    }
    Ok(StagesRun {
        outcomes,
        failure,
        lock,
    })
}

/// Whether `dir` holds a finished stage with this fingerprint and intact artifacts: every
/// artifact its record lists is present with its digest, the record lists at least one, and
/// every artifact the stage [requires](Stage::required_artifacts) is among them.
fn up_to_date(
    ctx: &Context,
    stage: &dyn Stage,
    name: &str,
    dir: &Path,
    fp: &str,
) -> Option<StageRecord> {
    let text = std::fs::read_to_string(dir.join(STAGE_FILE)).ok()?;
    let record: StageRecord = serde_json::from_str(&text).ok()?;
    if record.fingerprint != fp {
        return None;
    }
    if let Some(missing) = missing_required(stage, &record.artifacts) {
        ctx.terminal.line(format!(
            "{name}: {STAGE_FILE} does not list {missing}; rebuilding"
        ));
        return None;
    }
    for (path, sha) in &record.artifacts {
        if sha256_file(&dir.join(path)).ok().as_deref() != Some(sha.as_str()) {
            ctx.terminal.line(format!(
                "{name}: artifact {path} is missing or corrupt; rebuilding"
            ));
            return None;
        }
    }
    Some(record)
}

/// The first artifact the stage requires that `artifacts` lacks, or `"any artifact"` when it
/// is empty.
fn missing_required(stage: &dyn Stage, artifacts: &[(String, String)]) -> Option<String> {
    if artifacts.is_empty() {
        return Some("any artifact".into());
    }
    stage
        .required_artifacts()
        .into_iter()
        .find(|r| !artifacts.iter().any(|(p, _)| p == r))
}

/// Runs one stage unless it is up to date: its outcome, and its error when it failed.
fn run_one(
    stage: &dyn Stage,
    name: &str,
    fp: &str,
    forced: bool,
    ctx: &Context,
) -> (StageOutcome, Option<anyhow::Error>) {
    let dir = ctx.dir(name);
    if !forced && let Some(record) = up_to_date(ctx, stage, name, &dir, fp) {
        ctx.terminal.line(format!("{name:>22}  up to date"));
        let outcome = StageOutcome {
            stage: name.into(),
            status: status::UP_TO_DATE.into(),
            seconds: 0.0,
            dir,
            fingerprint: fp.into(),
            artifacts: record.artifacts.into_iter().map(|a| a.0).collect(),
            error: None,
        };
        return (outcome, None);
    }
    let partial = ctx.root.join(format!("{name}.partial"));
    let started = Instant::now();
    match build_in_partial(stage, name, fp, ctx, &partial, &dir) {
        Ok((seconds, artifacts)) => {
            ctx.terminal.line(format!(
                "{name:>22}  built in {}",
                super::human_secs(seconds)
            ));
            let outcome = StageOutcome {
                stage: name.into(),
                status: status::BUILT.into(),
                seconds,
                dir,
                fingerprint: fp.into(),
                artifacts,
                error: None,
            };
            (outcome, None)
        }
        Err(e) => {
            ctx.terminal.line(format!("{name:>22}  failed"));
            let outcome = StageOutcome {
                stage: name.into(),
                status: status::FAILED.into(),
                seconds: started.elapsed().as_secs_f64(),
                dir: partial.clone(),
                fingerprint: fp.into(),
                artifacts: Vec::new(),
                error: Some(crate::exit::one_line(&e)),
            };
            let e = e.context(format!(
                "stage {name} failed (log: {}; earlier artifacts kept in {})",
                partial.join(LOG_FILE).display(),
                dir.display()
            ));
            (outcome, Some(e))
        }
    }
}

/// Runs the stage in its partial directory, records it and swaps it in; returns its wall time
/// and artifacts.
fn build_in_partial(
    stage: &dyn Stage,
    name: &str,
    fp: &str,
    ctx: &Context,
    partial: &Path,
    dir: &Path,
) -> Result<(f64, Vec<String>)> {
    let marker = partial.join(MARKER_FILE);
    // A partial run of other inputs cannot be resumed: start it over.
    if partial.exists() && std::fs::read_to_string(&marker).ok().as_deref() != Some(fp) {
        std::fs::remove_dir_all(partial)
            .with_context(|| format!("removing {}", partial.display()))?;
    }
    let resuming = partial.exists();
    std::fs::create_dir_all(partial).with_context(|| format!("creating {}", partial.display()))?;
    std::fs::write(&marker, fp).with_context(|| format!("writing {}", marker.display()))?;
    let log_path = partial.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut reporter = Reporter::with_log(ctx.quiet, ctx.verbose, log);
    ctx.terminal.line(format!(
        "{name:>22}  {}",
        if resuming { "resuming" } else { "running" }
    ));
    let started = Instant::now();
    let result = stage.run(ctx, partial, &mut reporter);
    reporter.finish_bar();
    if let Err(e) = result {
        reporter.line(format!("failed: {e:#}"));
        return Err(e);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut artifacts = Vec::new();
    collect_files(partial, partial, &mut artifacts)?;
    artifacts.retain(|(p, _)| p != MARKER_FILE && p != LOG_FILE && p != STAGE_FILE);
    if let Some(missing) = missing_required(stage, &artifacts) {
        let e = anyhow::anyhow!(
            "stage {name} finished without writing {missing} in {}",
            partial.display()
        );
        reporter.line(format!("failed: {e}"));
        return Err(e);
    }
    let record = StageRecord {
        stage: name.into(),
        fingerprint: fp.into(),
        seconds,
        artifacts: artifacts.clone(),
    };
    write_json_atomic(&partial.join(STAGE_FILE), &record)?;
    crate::fsutil::replace_dir(partial, dir, &ctx.root.join(format!("{name}.old")))
        .with_context(|| format!("moving {} into place", dir.display()))?;
    Ok((seconds, artifacts.into_iter().map(|a| a.0).collect()))
}

fn collect_files(base: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name != MARKER_FILE {
            continue; // temporary files of atomic writes
        }
        if p.is_dir() {
            collect_files(base, &p, out)?;
        } else {
            let rel = p
                .strip_prefix(base)
                .with_context(|| format!("{} is not under {}", p.display(), base.display()))?
                .to_string_lossy()
                .into_owned();
            out.push((rel, sha256_file(&p)?));
        }
    }
    Ok(())
}
