//! `distill-edge distill` and `distill-edge compare`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::cli::{CompareArgs, CurriculumBudget, DistillArgs, DistillOverrides, GlobalArgs};
use crate::config::distill::Method;
use crate::config::{DistillConfig, LrStage, TrainSettings};
use crate::data::{self, Splits};
use crate::fsutil::write_json_atomic;
use crate::model::evaluate::{ModelMetrics, evaluate};
use crate::progress::Reporter;
use crate::table::{Table, pct};
use crate::train::distill::distill;
use crate::train::{Checkpoint, TrainReport};

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
    Ok(())
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
    let splits = data::load(&config.data)?;
    reporter.line(format!(
        "distilling {} with {} ({} curriculum + {} main epochs) -> {}",
        config.student,
        config.distill.method.name(),
        config.distill.curriculum_epochs().iter().sum::<usize>(),
        config.train.total_epochs(),
        out.display()
    ));
    let report = distill(
        &config,
        &args.config.display().to_string(),
        &splits,
        &out,
        args.resume,
        args.force,
        &mut reporter,
    )
    .with_context(|| format!("distilling {}", config.student))?;
    if global.json {
        return super::print_json(&report);
    }
    if !global.quiet {
        let mut t = Table::new(["method", "params", "MACs", "epochs", "test top-1", "time"]);
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
    /// Method.
    pub method: Method,
    /// CurriculumBudget (InDistill only; `None` for the others, which run the main phase alone).
    pub budget: Option<CurriculumBudget>,
    /// Seed.
    pub seed: u64,
    /// Epochs trained.
    pub epochs: usize,
    /// Whether the head was trained (top-1 is meaningful).
    pub classifies: bool,
    /// Metrics on the test split.
    pub metrics: ModelMetrics,
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

/// What every run of a comparison shares.
struct Comparison<'a> {
    base: &'a DistillConfig,
    splits: &'a Splits,
    top_k: usize,
    origin: &'a str,
}

fn run_one(
    cmp: &Comparison<'_>,
    method: Method,
    budget: Option<CurriculumBudget>,
    seed: u64,
    dir: &Path,
    reporter: &mut Reporter,
) -> Result<CompareRun> {
    let (splits, origin, top_k) = (cmp.splits, cmp.origin, cmp.top_k);
    let mut config = cmp.base.clone();
    config.seed = seed;
    config.distill.method = method;
    config.distill.weights = None;
    // The curriculum runs at the main schedule's first rate, whatever the budget does to it.
    if config.distill.curriculum_lr.is_none() {
        config.distill.curriculum_lr = Some(config.train.lr_at(1));
    }
    match budget {
        Some(CurriculumBudget::Equal) => {
            let c: usize = config.distill.curriculum.iter().sum();
            config.train.schedule = shorten(&config.train.schedule, c)?;
        }
        Some(CurriculumBudget::Control) => {
            config.distill.curriculum = vec![0; config.distill.curriculum.len()];
        }
        Some(CurriculumBudget::Warmup) | None => {}
    }
    let done = dir.join(crate::train::supervised::MODEL_FILE);
    let resume = dir.join(crate::train::supervised::CHECKPOINT_FILE).exists();
    let report: Option<TrainReport> = if done.exists() && resume {
        // A finished run: resuming it trains nothing and rewrites the same final weights.
        None
    } else {
        Some(distill(
            &config, origin, splits, dir, resume, false, reporter,
        )?)
    };
    let ckpt = Checkpoint::read(&done)?;
    if report.is_none()
        && ckpt.header.epochs_done
            != config.distill.curriculum_epochs().iter().sum::<usize>()
                + config.train.total_epochs()
    {
        bail!(
            "{}: holds a run with a different schedule; delete it or use another --out",
            dir.display()
        );
    }
    let net = ckpt.load_model(&crate::runtime::cpu(), &done)?;
    reporter.line(format!("evaluating {}", dir.display()));
    let metrics = evaluate(&net, splits, &ckpt.header.normalization, 500, Some(top_k))?;
    let arch = &ckpt.header.architecture;
    Ok(CompareRun {
        method,
        budget,
        seed,
        epochs: ckpt.header.epochs_done,
        classifies: config.distill.weights().trains_head(),
        metrics,
        seconds: ckpt.header.history.iter().map(|h| h.seconds).sum(),
        params: arch.trainable_params(),
        macs: arch.macs(),
        dir: dir.to_path_buf(),
    })
}

/// Runs every (method, budget, seed) and prints the comparison.
pub fn compare(args: &CompareArgs, global: &GlobalArgs) -> Result<()> {
    let mut config = DistillConfig::load(&args.config)?;
    apply_overrides(&mut config, &args.overrides)?;
    let origin = args.config.display().to_string();
    crate::config::validate_name(&origin, "name", &config.name)?;
    let mut reporter = Reporter::new(global.quiet);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&config.name).join("compare"));
    let _lock = super::train::lock_run_dir(&out, "compare", &reporter)?;
    let splits = data::load(&config.data)?;
    let cmp = Comparison {
        base: &config,
        splits: &splits,
        top_k: args.top_k,
        origin: &origin,
    };
    let mut runs = Vec::new();
    for &seed in &args.seeds {
        for &method in &args.methods {
            let budgets: Vec<Option<CurriculumBudget>> = if method == Method::Indistill {
                args.budgets.iter().copied().map(Some).collect()
            } else {
                vec![None]
            };
            for budget in budgets {
                let label = match budget {
                    Some(b) => format!("{}-{}", method.name(), serde_plain(b)),
                    None => method.name().to_string(),
                };
                reporter.line(format!("== {label}, seed {seed}"));
                let dir = out.join(format!("{label}-seed{seed}"));
                runs.push(run_one(&cmp, method, budget, seed, &dir, &mut reporter)?);
            }
        }
    }
    let summary = summarize(&runs);
    write_json_atomic(
        &out.join("compare.json"),
        &serde_json::json!({ "runs": runs, "summary": summary }),
    )
    .with_context(|| format!("writing {}", out.join("compare.json").display()))?;
    let table = render(&summary, &args.seeds);
    crate::fsutil::write_atomic(&out.join("compare.md"), table.as_bytes())
        .with_context(|| format!("writing {}", out.join("compare.md").display()))?;
    if global.json {
        return super::print_json(&serde_json::json!({ "runs": runs, "summary": summary }));
    }
    if !global.quiet {
        print!("{table}");
    }
    Ok(())
}

fn serde_plain(b: CurriculumBudget) -> &'static str {
    match b {
        CurriculumBudget::Equal => "equal",
        CurriculumBudget::Warmup => "warmup",
        CurriculumBudget::Control => "control",
    }
}

/// Mean ± std of one configuration over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    /// Method and budget label.
    pub label: String,
    /// Seeds averaged.
    pub seeds: usize,
    /// Epochs.
    pub epochs: usize,
    /// Head trained.
    pub classifies: bool,
    /// (mean, std) of top-1, mAP cosine, mAP L2, precision@k cosine, seconds.
    pub accuracy: (f64, f64),
    /// mAP, cosine distance.
    pub map_cosine: (f64, f64),
    /// mAP, L2 distance.
    pub map_l2: (f64, f64),
    /// Precision of the top k, cosine distance.
    pub precision_at_k: (f64, f64),
    /// Training wall time.
    pub seconds: (f64, f64),
    /// Trainable parameters.
    pub params: usize,
    /// MACs per image.
    pub macs: u64,
    /// k of precision@k.
    pub k: usize,
}

fn summarize(runs: &[CompareRun]) -> Vec<CompareRow> {
    let mut labels: Vec<String> = Vec::new();
    let label_of = |r: &CompareRun| match r.budget {
        Some(CurriculumBudget::Control) => format!("{} losses, no curriculum", r.method.name()),
        Some(b) => format!("{} ({} budget)", r.method.name(), serde_plain(b)),
        None => r.method.name().to_string(),
    };
    for r in runs {
        let l = label_of(r);
        if !labels.contains(&l) {
            labels.push(l);
        }
    }
    labels
        .into_iter()
        .map(|label| {
            let rs: Vec<&CompareRun> = runs.iter().filter(|r| label_of(r) == label).collect();
            let col = |f: &dyn Fn(&CompareRun) -> f64| {
                mean_std(&rs.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            let ret =
                |r: &CompareRun, i: usize| r.metrics.retrieval.as_ref().map_or(0.0, |m| m[i].map);
            CompareRow {
                label,
                seeds: rs.len(),
                epochs: rs[0].epochs,
                classifies: rs[0].classifies,
                accuracy: col(&|r| r.metrics.accuracy),
                map_cosine: col(&|r| ret(r, 0)),
                map_l2: col(&|r| ret(r, 1)),
                precision_at_k: col(&|r| {
                    r.metrics
                        .retrieval
                        .as_ref()
                        .map_or(0.0, |m| m[0].precision_at_k)
                }),
                seconds: col(&|r| r.seconds),
                params: rs[0].params,
                macs: rs[0].macs,
                k: rs[0].metrics.retrieval.as_ref().map_or(0, |m| m[0].k),
            }
        })
        .collect()
}

fn render(rows: &[CompareRow], seeds: &[u64]) -> String {
    let pm = |(m, s): (f64, f64)| {
        if seeds.len() > 1 {
            format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * s)
        } else {
            format!("{:.2}", 100.0 * m)
        }
    };
    let k = rows.first().map_or(100, |r| r.k);
    let mut t = Table::new([
        "method".to_string(),
        "epochs".into(),
        "top-1 %".into(),
        "mAP cos %".into(),
        "mAP L2 %".into(),
        format!("P@{k} cos %"),
        "params".into(),
        "MACs".into(),
        "time s".into(),
    ]);
    for r in rows {
        t.row([
            r.label.clone(),
            r.epochs.to_string(),
            if r.classifies {
                pm(r.accuracy)
            } else {
                "n/a (head untrained)".into()
            },
            pm(r.map_cosine),
            pm(r.map_l2),
            pm(r.precision_at_k),
            r.params.to_string(),
            r.macs.to_string(),
            format!("{:.0}", r.seconds.0),
        ]);
    }
    format!(
        "{}\nseeds: {:?}; mean{} over seeds. Retrieval: database = train split, queries = test split.\n",
        t.render(),
        seeds,
        if seeds.len() > 1 {
            " ± sample std"
        } else {
            ""
        }
    )
}
