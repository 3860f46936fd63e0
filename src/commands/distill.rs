//! `distill-edge distill` and `distill-edge compare`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::cli::{CompareArgs, CurriculumBudget, DistillArgs, DistillOverrides, GlobalArgs};
use crate::config::distill::{BUILTIN_VARIANTS, Method, VariantSpec};
use crate::config::{DistillConfig, LrStage, TrainSettings};
use crate::data::{self, Splits};
use crate::eval::paired::{PairedDifference, paired};
use crate::fsutil::write_json_atomic;
use crate::infer::teacher::OnnxTeacher;
use crate::model::evaluate::{ModelMetrics, evaluate};
use crate::progress::Reporter;
use crate::table::{Table, pct};
use crate::train::Checkpoint;
use crate::train::distill::{distill, run_identity};
use crate::train::teacher_cache::ForeignTeacher;

fn apply_overrides(config: &mut DistillConfig, o: &DistillOverrides) -> Result<()> {
    if o.data.data.is_some() || o.data.data_path.is_some() {
        config.data = super::resolve_data(Some(config.data.clone()), &o.data)?;
    }
    if let Some(t) = &o.teacher {
        config.teacher = Some(t.clone());
    }
    if let Some(s) = &o.student {
        config.student = s.clone();
    }
    if let Some(c) = &o.curriculum {
        config.distill.curriculum = c.clone();
    }
    if let Some(s) = &o.schedule {
        config.train.schedule =
            TrainSettings::parse_schedule(s).map_err(|e| anyhow::anyhow!("--schedule {e}"))?;
    }
    if let Some(b) = o.backend {
        config.backend = Some(b.into());
    }
    if let Some(n) = o.devices {
        config.devices = Some(n);
    }
    // A backend (or a number of devices) this binary or machine lacks is refused before
    // anything is read or locked.
    config
        .backend
        .unwrap_or_default()
        .autodiff_devices(config.devices.unwrap_or(1))?;
    Ok(())
}

/// The ONNX teacher of `config`, loaded, when `teacher` is an `.onnx` file; with `indistill`,
/// pruned for the student (one tap per block) on the images of `splits`.
fn onnx_teacher(
    config: &DistillConfig,
    splits: &Splits,
    indistill: bool,
) -> Result<Option<OnnxTeacher>> {
    let loaded = OnnxTeacher::for_config(config, &splits.train, indistill)?;
    if loaded.is_none() && config.teacher_onnx.is_some() {
        bail!(
            "[teacher-onnx] is set but the teacher {} is not an .onnx file",
            config
                .teacher
                .as_ref()
                .map_or("(none)".into(), |p| p.display().to_string())
        );
    }
    Ok(loaded)
}

/// Runs one distillation; its output directory is locked for the run
/// (see [`super::train::lock_run_dir`]).
pub fn run(args: &DistillArgs, global: &GlobalArgs) -> Result<()> {
    let mut config = DistillConfig::load(&args.config)?;
    apply_overrides(&mut config, &args.overrides)?;
    if let Some(m) = args.method {
        config.distill.method = m;
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    if let Some(n) = &args.name {
        crate::config::validate_name("command line", "--name", n)?;
        config.name = n.clone();
    }
    crate::config::validate_name(&args.config.display().to_string(), "name", &config.name)?;
    let mut reporter = Reporter::new(global.quiet);
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs")
            .join(&config.name)
            .join(format!("distill-{}", config.distill.method.name()))
    });
    let _lock = super::train::lock_run_dir(&out, "distill", &reporter)?;
    reporter.line(format!("loading {} data", config.data.name()));
    let splits = super::training_splits(&config.data, config.validation.as_ref(), &reporter)?;
    reporter.line(format!(
        "distilling {} with {} ({} curriculum + {} main epochs) -> {}",
        config.student,
        config.distill.method.name(),
        config.distill.curriculum_epochs().iter().sum::<usize>(),
        config.train.total_epochs(),
        out.display()
    ));
    let foreign = onnx_teacher(&config, &splits, config.distill.method == Method::Indistill)?;
    let report = distill(
        &config,
        &args.config.display().to_string(),
        &splits,
        &out,
        args.resume,
        args.force,
        foreign.as_ref().map(|t| t as &dyn ForeignTeacher),
        &mut reporter,
    )
    .with_context(|| format!("distilling {}", config.student))?;
    if global.json {
        return super::print_json(&report);
    }
    if !global.quiet {
        let split = if config.validation.is_some() {
            "validation top-1"
        } else {
            "test top-1"
        };
        let mut t = Table::new(["method", "params", "MACs", "epochs", split, "time"]);
        t.row([
            config.distill.method.name().to_string(),
            report.params.to_string(),
            report.macs.to_string(),
            report.epochs.len().to_string(),
            if config.distill.weights().trains_head() {
                pct(report.test_accuracy)
            } else {
                "- (head untrained)".into()
            },
            format!("{:.0}s", report.seconds),
        ]);
        print!("\n{}", t.render());
        println!("model written to {}", report.model.display());
    }
    Ok(())
}

/// One finished run of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRun {
    /// Variant name (built-in or `[variants.<name>]`).
    pub variant: String,
    /// Row label: the variant, with the budget when several are compared.
    pub label: String,
    /// Method of the variant.
    pub method: Method,
    /// Budget (variants with a curriculum only).
    pub budget: Option<CurriculumBudget>,
    /// Seed.
    pub seed: u64,
    /// Epochs trained.
    pub epochs: usize,
    /// Whether the head was trained (top-1 is meaningful).
    pub classifies: bool,
    /// Metrics on the validation split (when the config holds one out).
    pub validation: Option<ModelMetrics>,
    /// Metrics on the test split (without a validation split, or with `--test`).
    pub test: Option<ModelMetrics>,
    /// Wall time of the training, seconds (summed over resumed invocations).
    pub seconds: f64,
    /// Trainable parameters.
    pub params: usize,
    /// MACs per image.
    pub macs: u64,
    /// Run directory.
    pub dir: PathBuf,
}

/// Mean and sample standard deviation.
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The schedule with `epochs` removed from its front (for the equal-epoch budget).
fn shorten(schedule: &[LrStage], mut epochs: usize) -> Result<Vec<LrStage>> {
    let mut out = Vec::new();
    for s in schedule {
        let take = epochs.min(s.epochs);
        epochs -= take;
        if s.epochs > take {
            out.push(LrStage {
                epochs: s.epochs - take,
                lr: s.lr,
            });
        }
    }
    if epochs > 0 || out.is_empty() {
        bail!(
            "equal budget: the curriculum is as long as the whole main schedule; lengthen [train] schedule or use --budgets warmup"
        );
    }
    Ok(out)
}

/// The splits a comparison trains and evaluates on.
enum CompareData {
    /// No validation split configured: train on the training split, report on the test split.
    Plain(Splits),
    /// A validation split held out of the training split.
    HeldOut(data::split::HeldOut),
}

impl CompareData {
    fn training(&self) -> Splits {
        match self {
            CompareData::Plain(s) => s.clone(),
            CompareData::HeldOut(h) => h.for_validation(),
        }
    }
}

/// What every run of a comparison shares.
struct Comparison<'a> {
    base: &'a DistillConfig,
    data: &'a CompareData,
    training: &'a Splits,
    test: bool,
    top_k: usize,
    origin: &'a str,
    foreign: Option<&'a dyn ForeignTeacher>,
}

/// One run of a comparison: which variant, budget and seed.
struct RunSpec<'a> {
    variant: &'a str,
    spec: &'a VariantSpec,
    label: String,
    budget: Option<CurriculumBudget>,
    seed: u64,
}

fn run_one(
    cmp: &Comparison<'_>,
    run: &RunSpec<'_>,
    dir: &Path,
    reporter: &mut Reporter,
) -> Result<CompareRun> {
    let mut config = cmp.base.clone();
    config.seed = run.seed;
    config.distill = run.spec.apply(&cmp.base.distill);
    if let Some(schedule) = &run.spec.schedule {
        config.train.schedule = schedule.clone();
    }
    // A run's identity is its own settings, not the list of variants beside it.
    config.variants.clear();
    // The curriculum runs at the main schedule's first rate, whatever the budget does to it.
    if config.distill.curriculum_lr.is_none() {
        config.distill.curriculum_lr = Some(config.train.lr_at(1));
    }
    if run.budget == Some(CurriculumBudget::Equal) {
        let c: usize = config.distill.curriculum_epochs().iter().sum();
        config.train.schedule = shorten(&config.train.schedule, c)?;
    }
    let done = dir.join(crate::train::supervised::MODEL_FILE);
    let resume = dir.join(crate::train::supervised::CHECKPOINT_FILE).exists();
    let finished = done.exists() && resume;
    if finished {
        // A finished run is reused only if it is exactly this run (config, teacher weights).
        let want = run_identity(&config)?;
        let have = Checkpoint::read(&done)?.header.config_hash;
        if have != want {
            bail!(
                "{}: holds a run of different settings (config hash {have}, this variant needs {want}); delete it or use another --out",
                dir.display()
            );
        }
    } else {
        distill(
            &config,
            cmp.origin,
            cmp.training,
            dir,
            resume,
            false,
            cmp.foreign,
            reporter,
        )?;
    }
    let ckpt = Checkpoint::read(&done)?;
    let net = ckpt.load_model(&crate::runtime::cpu(), &done)?;
    let norm = &ckpt.header.normalization;
    let (validation, test) = match cmp.data {
        CompareData::Plain(s) => {
            reporter.line(format!("evaluating {} on the test split", dir.display()));
            (None, Some(evaluate(&net, s, norm, 500, Some(cmp.top_k))?))
        }
        CompareData::HeldOut(h) => {
            reporter.line(format!("evaluating {} on validation", dir.display()));
            let v = evaluate(&net, &h.for_validation(), norm, 500, Some(cmp.top_k))?;
            let t = if cmp.test {
                reporter.line(format!("evaluating {} on the test split", dir.display()));
                Some(evaluate(&net, &h.for_test(), norm, 500, Some(cmp.top_k))?)
            } else {
                None
            };
            (Some(v), t)
        }
    };
    let arch = &ckpt.header.architecture;
    Ok(CompareRun {
        variant: run.variant.to_string(),
        label: run.label.clone(),
        method: run.spec.method,
        budget: run.budget,
        seed: run.seed,
        epochs: ckpt.header.epochs_done,
        classifies: config.distill.weights().trains_head(),
        validation,
        test,
        seconds: ckpt.header.history.iter().map(|h| h.seconds).sum(),
        params: arch.trainable_params(),
        macs: arch.macs(),
        dir: dir.to_path_buf(),
    })
}

/// The variant `name`: the config's `[variants.<name>]`, else a built-in.
fn resolve_variant(config: &DistillConfig, origin: &str, name: &str) -> Result<VariantSpec> {
    if let Some(v) = config.variants.get(name) {
        return Ok(v.clone());
    }
    VariantSpec::builtin(name, &config.distill).ok_or_else(|| {
        let mut known: Vec<String> = BUILTIN_VARIANTS.iter().map(|s| s.to_string()).collect();
        known.extend(config.variants.keys().cloned());
        anyhow::anyhow!(
            "--variants {name}: no such variant; expected a built-in or a [variants.<name>] of {origin}: {}",
            known.join(", ")
        )
    })
}

/// Runs every (variant, budget, seed) and prints the comparison.
pub fn compare(args: &CompareArgs, global: &GlobalArgs) -> Result<()> {
    let mut config = DistillConfig::load(&args.config)?;
    apply_overrides(&mut config, &args.overrides)?;
    let origin = args.config.display().to_string();
    crate::config::validate_name(&origin, "name", &config.name)?;
    let variants: Vec<(String, VariantSpec)> = args
        .variants
        .iter()
        .map(|n| Ok((n.clone(), resolve_variant(&config, &origin, n)?)))
        .collect::<Result<_>>()?;
    if let Some(dup) = args
        .seeds
        .iter()
        .enumerate()
        .find(|(i, s)| args.seeds[..*i].contains(s))
    {
        bail!("--seeds: seed {} is given twice", dup.1);
    }
    if args.test && config.validation.is_none() {
        bail!(
            "--test: {origin} holds no validation split, so every figure is already on the test split; add [validation] images = N to choose on validation first"
        );
    }
    let mut reporter = Reporter::new(global.quiet);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&config.name).join("compare"));
    let _lock = super::train::lock_run_dir(&out, "compare", &reporter)?;
    let loaded = data::load(&config.data)?;
    let cdata = match &config.validation {
        None => CompareData::Plain(loaded),
        Some(v) => CompareData::HeldOut(data::split::hold_out(&loaded, v)?),
    };
    let training = cdata.training();
    let foreign = onnx_teacher(
        &config,
        &training,
        variants.iter().any(|(_, v)| v.method == Method::Indistill),
    )?;
    let cmp = Comparison {
        foreign: foreign.as_ref().map(|t| t as &dyn ForeignTeacher),
        base: &config,
        data: &cdata,
        training: &training,
        test: args.test,
        top_k: args.top_k,
        origin: &origin,
    };
    let mut runs = Vec::new();
    for &seed in &args.seeds {
        for (name, spec) in &variants {
            let has_curriculum = spec.method == Method::Indistill
                && spec.apply(&config.distill).curriculum.iter().sum::<usize>() > 0;
            let budgets: Vec<Option<CurriculumBudget>> = if has_curriculum {
                args.budgets.iter().copied().map(Some).collect()
            } else {
                vec![None]
            };
            for budget in budgets {
                let (label, dir_name) = match budget {
                    Some(b) if args.budgets.len() > 1 => (
                        format!("{name} ({} budget)", budget_name(b)),
                        format!("{name}-{}", budget_name(b)),
                    ),
                    Some(b) => (name.clone(), format!("{name}-{}", budget_name(b))),
                    None => (name.clone(), name.clone()),
                };
                reporter.line(format!("== {label}, seed {seed}"));
                let dir = out.join(format!("{dir_name}-seed{seed}"));
                let run = RunSpec {
                    variant: name,
                    spec,
                    label,
                    budget,
                    seed,
                };
                runs.push(run_one(&cmp, &run, &dir, &mut reporter)?);
            }
        }
    }
    let mut results = Vec::new();
    for (split, pick) in [
        (
            "validation",
            (|r: &CompareRun| r.validation.as_ref()) as fn(&CompareRun) -> Option<&ModelMetrics>,
        ),
        ("test", |r: &CompareRun| r.test.as_ref()),
    ] {
        if runs.iter().all(|r| pick(r).is_some()) && !runs.is_empty() {
            results.push(SplitResult::new(split, &runs, pick, &args.seeds));
        }
    }
    let json = serde_json::json!({
        "seeds": args.seeds,
        "validation": config.validation,
        "runs": runs,
        "results": results,
    });
    write_json_atomic(&out.join("compare.json"), &json)
        .with_context(|| format!("writing {}", out.join("compare.json").display()))?;
    let text = render_all(&results, &args.seeds, config.validation.is_some());
    crate::fsutil::write_atomic(&out.join("compare.md"), text.as_bytes())
        .with_context(|| format!("writing {}", out.join("compare.md").display()))?;
    if global.json {
        return super::print_json(&json);
    }
    if !global.quiet {
        print!("{text}");
    }
    Ok(())
}

fn budget_name(b: CurriculumBudget) -> &'static str {
    match b {
        CurriculumBudget::Equal => "equal",
        CurriculumBudget::Warmup => "warmup",
    }
}

fn metric(m: &ModelMetrics, i: usize) -> f64 {
    let ret = |j: usize| m.retrieval.as_ref().map_or(0.0, |r| r[j].map);
    match i {
        0 => m.accuracy,
        1 => ret(0),
        2 => ret(1),
        _ => m.retrieval.as_ref().map_or(0.0, |r| r[0].precision_at_k),
    }
}

/// One row of a comparison on one split: mean ± std over seeds, and the per-seed values.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    /// Variant (and budget) label.
    pub label: String,
    /// Seeds averaged.
    pub seeds: usize,
    /// Epochs.
    pub epochs: usize,
    /// Head trained (top-1 is meaningful).
    pub classifies: bool,
    /// Per metric (top-1, mAP cos, mAP L2, P@k cos): (mean, sample std).
    pub mean_std: [(f64, f64); 4],
    /// Per metric, the value of each seed (in the order of `seeds` of the comparison).
    pub per_seed: [Vec<f64>; 4],
    /// Training wall time (mean, std).
    pub seconds: (f64, f64),
    /// Trainable parameters.
    pub params: usize,
    /// MACs per image.
    pub macs: u64,
    /// k of precision@k.
    pub k: usize,
}

/// The paired difference of two rows over the same seeds, per metric (`a - b`).
#[derive(Debug, Clone, Serialize)]
pub struct PairRow {
    /// First label.
    pub a: String,
    /// Second label.
    pub b: String,
    /// Per metric (top-1, mAP cos, mAP L2, P@k cos); `None` for top-1 when a head is untrained.
    pub metrics: [Option<PairedDifference>; 4],
}

/// Everything reported for one split.
#[derive(Debug, Clone, Serialize)]
pub struct SplitResult {
    /// `validation` or `test`.
    pub split: String,
    /// One row per label.
    pub rows: Vec<CompareRow>,
    /// Every pair of labels, in row order.
    pub pairs: Vec<PairRow>,
}

impl SplitResult {
    fn new(
        split: &str,
        runs: &[CompareRun],
        pick: fn(&CompareRun) -> Option<&ModelMetrics>,
        seeds: &[u64],
    ) -> Self {
        let mut labels: Vec<&str> = Vec::new();
        for r in runs {
            if !labels.contains(&r.label.as_str()) {
                labels.push(&r.label);
            }
        }
        let of = |label: &str| -> Vec<&CompareRun> {
            // In the order of the seeds, so rows pair up seed by seed.
            seeds
                .iter()
                .filter_map(|s| runs.iter().find(|r| r.label == label && r.seed == *s))
                .collect()
        };
        let values = |rs: &[&CompareRun], i: usize| -> Vec<f64> {
            rs.iter()
                .map(|r| metric(pick(r).expect("checked"), i))
                .collect()
        };
        let rows: Vec<CompareRow> = labels
            .iter()
            .map(|label| {
                let rs = of(label);
                let per_seed = [0, 1, 2, 3].map(|i| values(&rs, i));
                CompareRow {
                    label: label.to_string(),
                    seeds: rs.len(),
                    epochs: rs[0].epochs,
                    classifies: rs[0].classifies,
                    mean_std: [0, 1, 2, 3].map(|i| mean_std(&per_seed[i])),
                    per_seed,
                    seconds: mean_std(&rs.iter().map(|r| r.seconds).collect::<Vec<_>>()),
                    params: rs[0].params,
                    macs: rs[0].macs,
                    k: pick(rs[0])
                        .and_then(|m| m.retrieval.as_ref())
                        .map_or(0, |m| m[0].k),
                }
            })
            .collect();
        let mut pairs = Vec::new();
        for (i, a) in rows.iter().enumerate() {
            for b in &rows[i + 1..] {
                let metrics = [0, 1, 2, 3].map(|m| {
                    (m > 0 || (a.classifies && b.classifies))
                        .then(|| paired(&a.per_seed[m], &b.per_seed[m]))
                });
                pairs.push(PairRow {
                    a: a.label.clone(),
                    b: b.label.clone(),
                    metrics,
                });
            }
        }
        SplitResult {
            split: split.to_string(),
            rows,
            pairs,
        }
    }
}

fn render_all(results: &[SplitResult], seeds: &[u64], held_out: bool) -> String {
    let mut out = String::new();
    for r in results {
        let heading = match (r.split.as_str(), held_out) {
            ("validation", _) => "validation split (held out of the training split)",
            (_, true) => "test split (report once; choices were made on validation)",
            _ => {
                "test split (no validation split configured: choices made on these figures are made on the test set)"
            }
        };
        out.push_str(&format!("## {heading}\n\n"));
        out.push_str(&render(r, seeds, held_out));
    }
    out
}

fn render(r: &SplitResult, seeds: &[u64], held_out: bool) -> String {
    let pm = |(m, s): (f64, f64)| {
        if seeds.len() > 1 {
            format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * s)
        } else {
            format!("{:.2}", 100.0 * m)
        }
    };
    let k = r.rows.first().map_or(100, |r| r.k);
    let mut t = Table::new([
        "variant".to_string(),
        "epochs".into(),
        "top-1 %".into(),
        "mAP cos %".into(),
        "mAP L2 %".into(),
        format!("P@{k} cos %"),
        "params".into(),
        "MACs".into(),
        "time s".into(),
    ]);
    for row in &r.rows {
        t.row([
            row.label.clone(),
            row.epochs.to_string(),
            if row.classifies {
                pm(row.mean_std[0])
            } else {
                "n/a (head untrained)".into()
            },
            pm(row.mean_std[1]),
            pm(row.mean_std[2]),
            pm(row.mean_std[3]),
            row.params.to_string(),
            row.macs.to_string(),
            format!("{:.0}", row.seconds.0),
        ]);
    }
    let mut text = format!(
        "{}\nseeds: {:?}; mean{} over seeds. Retrieval: database = the training images{}, queries = this split.\n",
        t.render(),
        seeds,
        if seeds.len() > 1 {
            " ± sample std"
        } else {
            ""
        },
        if held_out {
            " without the validation images"
        } else {
            ""
        }
    );
    if seeds.len() < 2 {
        return text + "\n";
    }
    // Per-seed values: top-1 (when the head is trained) / mAP cos.
    let mut head = vec!["variant (top-1 / mAP cos %)".to_string()];
    head.extend(seeds.iter().map(|s| format!("seed {s}")));
    let mut ps = Table::new(head);
    for row in &r.rows {
        let mut cells = vec![row.label.clone()];
        for i in 0..row.per_seed[1].len() {
            let top1 = if row.classifies {
                format!("{:.2}", 100.0 * row.per_seed[0][i])
            } else {
                "-".into()
            };
            cells.push(format!("{top1} / {:.2}", 100.0 * row.per_seed[1][i]));
        }
        ps.row(cells);
    }
    text.push_str(&format!("\n{}", ps.render()));
    let cell = |p: &Option<PairedDifference>| match p {
        None => "n/a".to_string(),
        Some(p) => format!(
            "{:+.2} [{:+.2}, {:+.2}] {}:{}{}",
            100.0 * p.mean,
            100.0 * p.ci_low.unwrap_or(f64::NAN),
            100.0 * p.ci_high.unwrap_or(f64::NAN),
            p.a_better,
            p.b_better,
            if p.excludes_zero() { " *" } else { "" }
        ),
    };
    let mut pt = Table::new([
        "A - B".to_string(),
        "Δ top-1".into(),
        "Δ mAP cos".into(),
        "Δ mAP L2".into(),
        format!("Δ P@{k} cos"),
    ]);
    for p in &r.pairs {
        pt.row([
            format!("{} - {}", p.a, p.b),
            cell(&p.metrics[0]),
            cell(&p.metrics[1]),
            cell(&p.metrics[2]),
            cell(&p.metrics[3]),
        ]);
    }
    text.push_str(&format!(
        "\nPaired differences over the {} seeds, percentage points: mean [95 % CI, Student's t, n - 1 = {} df] seeds favouring A:B; * = the interval excludes 0.\n{}\n",
        seeds.len(),
        seeds.len() - 1,
        pt.render()
    ));
    text
}
