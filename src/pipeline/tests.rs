//! The stage machinery with tiny fake stages (no training): fingerprints, `--from`,
//! up-to-date detection, failures and resume.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use anyhow::{Result, bail};

use super::stage::{
    Context, Inputs, LOG_FILE, STAGE_FILE, Stage, StageOutcome, StageRecord, fingerprints,
    run_stages, status,
};
use crate::data::DataSource;
use crate::fsutil::DirLock;
use crate::progress::Reporter;

/// How a fake stage behaves.
#[derive(Clone, Debug)]
struct Spec {
    name: &'static str,
    needs: Vec<&'static str>,
    /// Its "config section".
    input: u32,
    /// Fail after writing its artifact; `check` makes it a failed check.
    fail: Option<&'static str>,
    /// Files it declares it must produce (it writes only `out.txt`).
    required: Vec<&'static str>,
}

fn spec(name: &'static str, needs: &[&'static str], input: u32) -> Spec {
    Spec {
        name,
        needs: needs.to_vec(),
        input,
        fail: None,
        required: Vec::new(),
    }
}

/// Writes `out.txt` = its input and what it found in the partial directory; records its runs.
struct Fake {
    spec: Spec,
    runs: Rc<RefCell<Vec<String>>>,
}

impl Stage for Fake {
    fn name(&self) -> String {
        self.spec.name.into()
    }

    fn needs(&self) -> Vec<String> {
        self.spec.needs.iter().map(|s| s.to_string()).collect()
    }

    fn inputs(&self) -> Result<serde_json::Value> {
        Ok(Inputs::default().add("input", &self.spec.input)?.done())
    }

    fn required_artifacts(&self) -> Vec<String> {
        self.spec.required.iter().map(|s| s.to_string()).collect()
    }

    fn run(&self, ctx: &Context, dir: &Path, reporter: &mut Reporter) -> Result<()> {
        for n in &self.spec.needs {
            // Upstream artifacts are in place when a stage runs.
            assert!(ctx.dir(n).join("out.txt").is_file(), "{n} not built");
        }
        let resumed = dir.join("out.txt").is_file();
        self.runs.borrow_mut().push(format!(
            "{}{}",
            self.spec.name,
            if resumed { " (resumed)" } else { "" }
        ));
        reporter.line("working");
        std::fs::write(dir.join("out.txt"), format!("v{}", self.spec.input))?;
        match self.spec.fail {
            Some("check") => Err(crate::exit::CheckFailed("parity failed".into()).into()),
            Some(why) => bail!("{why}"),
            None => Ok(()),
        }
    }
}

/// A run directory and a log of which stages ran.
struct Bench {
    _tmp: tempfile::TempDir,
    ctx: Context,
    runs: Rc<RefCell<Vec<String>>>,
}

impl Bench {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = Context::new(
            tmp.path().join("run"),
            DataSource::FashionMnist { path: None, pad: 0 },
            true,
            false,
        );
        Self {
            _tmp: tmp,
            ctx,
            runs: Rc::default(),
        }
    }

    fn stages(&self, specs: &[Spec]) -> Vec<Box<dyn Stage>> {
        specs
            .iter()
            .map(|s| {
                Box::new(Fake {
                    spec: s.clone(),
                    runs: self.runs.clone(),
                }) as Box<dyn Stage>
            })
            .collect()
    }

    /// Runs the stages (releasing the run directory's lock when done, as a finished build
    /// does); returns the outcome and the names of the stages that ran.
    fn run(&self, specs: &[Spec], from: Option<&str>) -> (Ran, Vec<String>) {
        self.runs.borrow_mut().clear();
        let run = run_stages(&self.stages(specs), &self.ctx, from).unwrap();
        let ran = Ran {
            outcomes: run.outcomes,
            failure: run.failure,
        };
        (ran, self.runs.borrow().clone())
    }

    fn artifact(&self, stage: &str) -> String {
        std::fs::read_to_string(self.ctx.dir(stage).join("out.txt")).unwrap()
    }
}

/// A finished run without its lock.
struct Ran {
    outcomes: Vec<StageOutcome>,
    failure: Option<anyhow::Error>,
}

fn statuses(run: &Ran) -> Vec<(&str, &str)> {
    run.outcomes
        .iter()
        .map(|o| (o.stage.as_str(), o.status.as_str()))
        .collect()
}

fn abc(a: u32, b: u32, c: u32) -> Vec<Spec> {
    vec![spec("a", &[], a), spec("b", &["a"], b), spec("c", &[], c)]
}

#[test]
fn fingerprints_change_with_a_stage_inputs_or_its_upstream_only() {
    let bench = Bench::new();
    let fp = |specs: &[Spec]| fingerprints(&bench.stages(specs)).unwrap();
    let base = fp(&abc(1, 2, 3));
    assert_eq!(base, fp(&abc(1, 2, 3)), "deterministic");
    assert_eq!(base.len(), 3);
    assert!(base.iter().all(|f| f.len() == 16));

    // a's section changes: a and b (which needs a) change, c does not.
    let a_changed = fp(&abc(9, 2, 3));
    assert_ne!(a_changed[0], base[0]);
    assert_ne!(a_changed[1], base[1]);
    assert_eq!(a_changed[2], base[2]);

    // b's section changes: b only.
    let b_changed = fp(&abc(1, 9, 3));
    assert_eq!(b_changed[0], base[0]);
    assert_ne!(b_changed[1], base[1]);
    assert_eq!(b_changed[2], base[2]);

    // Same inputs under another name: another fingerprint.
    let renamed = fp(&[spec("z", &[], 1)]);
    assert_ne!(renamed[0], base[0]);
}

#[test]
fn stages_must_be_unique_and_come_after_what_they_need() {
    let bench = Bench::new();
    let err = fingerprints(&bench.stages(&[spec("b", &["a"], 1), spec("a", &[], 1)]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs a"), "{err}");
    let err = fingerprints(&bench.stages(&[spec("a", &[], 1), spec("a", &[], 2)]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("two stages are named a"), "{err}");
}

#[test]
fn a_stage_reruns_only_when_its_fingerprint_changes_or_an_artifact_is_damaged() {
    let bench = Bench::new();
    let (run, ran) = bench.run(&abc(1, 2, 3), None);
    assert!(run.failure.is_none());
    assert_eq!(ran, ["a", "b", "c"]);
    assert!(statuses(&run).iter().all(|s| s.1 == status::BUILT));
    for s in ["a", "b", "c"] {
        let dir = bench.ctx.dir(s);
        assert!(dir.join(STAGE_FILE).is_file());
        assert!(dir.join(LOG_FILE).is_file());
        assert!(!bench.ctx.root().join(format!("{s}.partial")).exists());
    }
    let outcome = &run.outcomes[0];
    assert_eq!(outcome.artifacts, ["out.txt"]);

    // Nothing changed.
    let (run, ran) = bench.run(&abc(1, 2, 3), None);
    assert!(ran.is_empty(), "{ran:?}");
    assert!(statuses(&run).iter().all(|s| s.1 == status::UP_TO_DATE));

    // Upstream section changed: a and b rerun, c is kept.
    let (_, ran) = bench.run(&abc(5, 2, 3), None);
    assert_eq!(ran, ["a", "b"]);
    assert_eq!(bench.artifact("a"), "v5");

    // A corrupt artifact: only its stage reruns (its fingerprint, hence b's, is unchanged).
    std::fs::write(bench.ctx.dir("a").join("out.txt"), "garbage").unwrap();
    let (run, ran) = bench.run(&abc(5, 2, 3), None);
    assert_eq!(ran, ["a"]);
    assert_eq!(statuses(&run)[1], ("b", status::UP_TO_DATE));
    assert_eq!(bench.artifact("a"), "v5");

    // A missing artifact.
    std::fs::remove_file(bench.ctx.dir("c").join("out.txt")).unwrap();
    let (_, ran) = bench.run(&abc(5, 2, 3), None);
    assert_eq!(ran, ["c"]);

    // A stage record of other inputs (e.g. written by an older version).
    let record = bench.ctx.dir("c").join(STAGE_FILE);
    let text = std::fs::read_to_string(&record).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["fingerprint"] = "0000000000000000".into();
    std::fs::write(&record, v.to_string()).unwrap();
    let (_, ran) = bench.run(&abc(5, 2, 3), None);
    assert_eq!(ran, ["c"]);
}

#[test]
fn from_forces_that_stage_and_every_later_one_and_rejects_unknown_names() {
    let bench = Bench::new();
    bench.run(&abc(1, 2, 3), None);
    let (run, ran) = bench.run(&abc(1, 2, 3), Some("b"));
    assert_eq!(ran, ["b", "c"]);
    assert_eq!(
        statuses(&run),
        [
            ("a", status::UP_TO_DATE),
            ("b", status::BUILT),
            ("c", status::BUILT)
        ]
    );

    let err = run_stages(&bench.stages(&abc(1, 2, 3)), &bench.ctx, Some("nope"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err, "--from nope: no such stage; the stages are: a, b, c",
        "{err}"
    );
}

#[test]
fn a_failed_stage_keeps_the_previous_artifacts_and_skips_the_later_stages() {
    let bench = Bench::new();
    bench.run(&abc(1, 2, 3), None);

    let mut specs = abc(1, 7, 3);
    specs[1].fail = Some("out of memory");
    let (run, ran) = bench.run(&specs, None);
    assert_eq!(ran, ["b"]);
    assert_eq!(
        statuses(&run),
        [
            ("a", status::UP_TO_DATE),
            ("b", status::FAILED),
            ("c", status::SKIPPED)
        ]
    );
    let failed = &run.outcomes[1];
    assert_eq!(failed.error.as_deref(), Some("out of memory"));
    assert_eq!(failed.dir, bench.ctx.root().join("b.partial"));
    let skipped = &run.outcomes[2];
    assert!(skipped.error.is_none() && skipped.artifacts.is_empty());
    assert_eq!(
        skipped.fingerprint.len(),
        16,
        "skipped stages still show theirs"
    );
    let err = format!("{:#}", run.failure.expect("a failure"));
    assert!(
        err.contains("stage b failed") && err.contains("out of memory"),
        "{err}"
    );
    // The previous good artifacts are kept; the failed run's are in the partial directory,
    // with the error in its log.
    assert_eq!(bench.artifact("b"), "v2");
    let partial = bench.ctx.root().join("b.partial");
    assert_eq!(
        std::fs::read_to_string(partial.join("out.txt")).unwrap(),
        "v7"
    );
    let log = std::fs::read_to_string(partial.join(LOG_FILE)).unwrap();
    assert!(log.contains("failed: out of memory"), "{log}");

    // Fixed, with the same inputs: it resumes in its partial directory and c runs again.
    let (run, ran) = bench.run(&abc(1, 7, 3), None);
    assert!(run.failure.is_none());
    assert_eq!(ran, ["b (resumed)"]);
    assert_eq!(statuses(&run)[2], ("c", status::UP_TO_DATE));
    assert_eq!(bench.artifact("b"), "v7");
    assert!(!partial.exists());
}

#[test]
fn a_partial_directory_of_other_inputs_is_started_over() {
    let bench = Bench::new();
    let mut specs = abc(1, 2, 3);
    specs[0].fail = Some("killed");
    let (run, _) = bench.run(&specs, None);
    assert!(run.failure.is_some());
    // Other inputs: the partial work cannot be resumed.
    let (run, ran) = bench.run(&abc(4, 2, 3), None);
    assert!(run.failure.is_none());
    assert_eq!(ran, ["a", "b", "c"]);
}

#[test]
fn a_failed_check_stays_a_check_failure() {
    let bench = Bench::new();
    let mut specs = abc(1, 2, 3);
    specs[2].fail = Some("check");
    let (run, _) = bench.run(&specs, None);
    let e = run.failure.expect("a failure");
    assert_eq!(
        crate::exit::ExitStatus::of_error(&e),
        crate::exit::ExitStatus::CheckFailed
    );
    assert_eq!(run.outcomes[2].error.as_deref(), Some("parity failed"));
}

/// The real list for the default pipeline config and one target: names, order, and every
/// fingerprint computable (the runner sources are in the checkout).
#[test]
fn the_default_pipeline_has_these_stages_in_this_order() {
    let root = crate::testing::source_root();
    let opts = super::BuildOptions {
        targets: vec![crate::board::TargetSpec::resolve("aarch64").unwrap()],
        device: None,
        from: None,
        verbose: false,
        quiet: true,
        connect_timeout: std::time::Duration::from_secs(10),
        ssh_options: vec![],
    };
    // quick: the teacher teaches the student directly; reference: through the auxiliary,
    // which starts from its own supervised baseline.
    for (profile, middle) in [
        (None, &[][..]),
        (Some("reference"), &["auxiliary-baseline", "auxiliary"][..]),
    ] {
        let (config, _) = super::config::PipelineConfig::load(
            &root.join("configs/pipeline/fashion-mnist.toml"),
            profile,
        )
        .unwrap();
        assert!(config.validation.is_some(), "{profile:?}");
        let list = super::stages::all(&config, &opts);
        let names = super::stage::order(&list).unwrap();
        let mut expected = vec!["teacher"];
        expected.extend(middle);
        expected.extend([
            "student",
            "baseline-none",
            "export",
            "check",
            "bundle-aarch64",
            "bench-aarch64",
        ]);
        assert_eq!(names, expected, "{profile:?}");
        assert_eq!(fingerprints(&list).unwrap().len(), expected.len());
    }
}

#[test]
fn a_stage_record_listing_no_artifacts_is_not_up_to_date() {
    let bench = Bench::new();
    bench.run(&abc(1, 2, 3), None);
    // What a second build racing the first could leave: a stage file and nothing it vouches
    // for. It must not make the stage "up to date".
    let path = bench.ctx.dir("a").join(STAGE_FILE);
    let mut record: StageRecord =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    record.artifacts.clear();
    std::fs::write(&path, serde_json::to_string(&record).unwrap()).unwrap();
    std::fs::remove_file(bench.ctx.dir("a").join("out.txt")).unwrap();
    let (run, ran) = bench.run(&abc(1, 2, 3), None);
    assert!(run.failure.is_none());
    assert_eq!(ran, ["a"]);
    assert_eq!(statuses(&run)[0], ("a", status::BUILT));
    assert_eq!(bench.artifact("a"), "v1");
}

#[test]
fn a_stage_must_produce_its_required_artifacts_to_be_built_or_up_to_date() {
    let bench = Bench::new();
    bench.run(&abc(1, 2, 3), None);
    // Same fingerprint, but now the stage declares model.ckpt, which its record lacks: not up
    // to date; and a run that does not write it fails, keeping the earlier artifacts.
    let mut specs = abc(1, 2, 3);
    specs[0].required = vec!["model.ckpt"];
    let (run, ran) = bench.run(&specs, None);
    assert_eq!(ran, ["a"]);
    assert_eq!(
        statuses(&run),
        [
            ("a", status::FAILED),
            ("b", status::SKIPPED),
            ("c", status::SKIPPED)
        ]
    );
    let err = format!("{:#}", run.failure.expect("a failure"));
    assert!(
        err.contains("stage a finished without writing model.ckpt"),
        "{err}"
    );
    assert_eq!(bench.artifact("a"), "v1");
    assert!(!bench.ctx.dir("a").join("model.ckpt").exists());
}

#[test]
fn a_second_build_of_a_locked_run_directory_is_refused_before_any_stage_runs() {
    let bench = Bench::new();
    let held = DirLock::acquire(bench.ctx.root(), "build").unwrap();
    let err = run_stages(&bench.stages(&abc(1, 2, 3)), &bench.ctx, None).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "is in use by another distill-edge build (pid {})",
            std::process::id()
        )),
        "{text}"
    );
    assert!(bench.runs.borrow().is_empty());
    drop(held);
    let (run, ran) = bench.run(&abc(1, 2, 3), None);
    assert!(run.failure.is_none());
    assert_eq!(ran, ["a", "b", "c"]);
}

#[test]
fn temporary_files_of_killed_runs_are_removed_from_the_run_directory() {
    let bench = Bench::new();
    bench.run(&abc(1, 2, 3), None);
    // A pid no process has (above Linux's largest pid_max).
    let dead = 4_194_305;
    let root = bench.ctx.root();
    let stale = [
        root.join(format!("a/.out.txt.tmp-{dead}-0123456789abcdef")),
        root.join(format!("b.partial/.model.ckpt.tmp-{dead}-0123456789abcdef")),
        root.join(format!("c/.bundle.tmp-{dead}")),
    ];
    let live = root.join(format!(".x.tmp-{}-0123456789abcdef", std::process::id()));
    for f in stale.iter().chain([&live]) {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b"x").unwrap();
    }
    let (run, ran) = bench.run(&abc(1, 2, 3), None);
    assert!(run.failure.is_none());
    assert!(ran.is_empty(), "{ran:?}");
    for f in &stale {
        assert!(!f.exists(), "{} left behind", f.display());
    }
    assert!(live.exists(), "a live process's temporary file was removed");
}
