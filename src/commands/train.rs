//! `distill-edge train`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::{GlobalArgs, TrainArgs};
use crate::config::{TrainConfig, TrainSettings};
use crate::fsutil::{DirLock, clean_stale_temps};
use crate::model::ModelSpec;
use crate::progress::Reporter;
use crate::table::{Table, pct};
use crate::train::supervised::{JobIdentity, TrainOptions, train};

/// Locks a command's output directory for this process ([`DirLock`]: another command on it
/// is refused at once, naming the holder's pid) and removes the temporary files killed runs
/// left in it. Held until the returned lock is dropped.
pub(crate) fn lock_run_dir(dir: &Path, what: &str, reporter: &Reporter) -> Result<DirLock> {
    let lock = DirLock::acquire(dir, what)?;
    let removed = clean_stale_temps(dir)
        .with_context(|| format!("removing temporary files in {}", dir.display()))?;
    if !removed.is_empty() {
        reporter.line(format!(
            "removed {} temporary file(s) left by a killed run in {}",
            removed.len(),
            dir.display()
        ));
    }
    Ok(lock)
}

/// Resolves the config (file, then command-line overrides) and trains. The output directory
/// is locked for the run (see [`lock_run_dir`]).
pub fn run(args: &TrainArgs, global: &GlobalArgs) -> Result<()> {
    let (mut config, origin) = match &args.config {
        Some(path) => (TrainConfig::load(path)?, path.display().to_string()),
        None => (TrainConfig::default_synthetic(), "built-in default".into()),
    };
    if args.data.data.is_some() || args.data.data_path.is_some() {
        config.data = super::resolve_data(Some(config.data.clone()), &args.data)?;
    }
    if let Some(m) = &args.model {
        config.model = m.clone();
    }
    if let Some(s) = &args.schedule {
        config.train.schedule =
            TrainSettings::parse_schedule(s).map_err(|e| anyhow::anyhow!("--schedule {e}"))?;
    }
    if let Some(b) = args.batch_size {
        config.train.batch_size = b;
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    if let Some(n) = &args.name {
        crate::config::validate_name("command line", "--name", n)?;
        config.name = n.clone();
    }
    if let Some(b) = args.backend {
        config.backend = Some(b.into());
    }
    if let Some(n) = args.devices {
        config.devices = Some(n);
    }
    config.validate(&origin)?;
    let backend = config.backend.unwrap_or_default();
    let devices = config.devices.unwrap_or(1);
    backend.autodiff_devices(devices)?;

    let mut reporter = Reporter::new(global.quiet);
    let spec = ModelSpec::resolve(&config.model, std::path::Path::new("."))?;
    let out: PathBuf = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&config.name).join("train"));
    let _lock = lock_run_dir(&out, "train", &reporter)?;
    reporter.line(format!("loading {} data", config.data.name()));
    let splits = super::training_splits(&config.data, config.validation.as_ref(), &reporter)?;
    let arch = spec.bind(splits.train.shape, splits.train.classes.len())?;
    arch.check_memory(config.train.batch_size)?;
    reporter.line(format!(
        "training {} ({} params, {} MACs) on {} ({} train / {} test, {}), {} epochs, batch {}, {} threads, backend {backend}{} -> {}",
        arch.spec.name,
        arch.trainable_params(),
        arch.macs(),
        config.data.name(),
        splits.train.len(),
        splits.test.len(),
        splits.train.shape,
        config.train.total_epochs(),
        config.train.batch_size,
        crate::runtime::threads(),
        if devices > 1 {
            format!(" x{devices} devices")
        } else {
            String::new()
        },
        out.display()
    ));
    // The saved config names the data by an absolute path: later commands read it from the
    // run directory, not from where this one ran.
    let config_toml = {
        let mut saved = config.clone();
        saved.data = saved.data.absolute();
        saved.to_toml()
    };
    let report = train(
        &arch,
        &config.train,
        &splits,
        &JobIdentity {
            config_hash: &config.hash(),
            dataset: config.data.name(),
            seed: config.seed,
            kind: "train",
            config_toml: &config_toml,
        },
        TrainOptions {
            out_dir: &out,
            resume: args.resume,
            force: args.force,
            reporter: &mut reporter,
            backend,
            devices,
        },
    )
    .with_context(|| format!("training {}", arch.spec.name))?;

    if global.json {
        super::print_json(&report)?;
    } else if !global.quiet {
        let split = if config.validation.is_some() {
            "validation top-1"
        } else {
            "test top-1"
        };
        let mut t = Table::new(["model", "params", "MACs", "epochs", split, "time"]);
        t.row([
            arch.spec.name.clone(),
            report.params.to_string(),
            report.macs.to_string(),
            report.epochs.len().to_string(),
            pct(report.test_accuracy),
            format!("{:.0}s", report.seconds),
        ]);
        print!("\n{}", t.render());
        println!("model written to {}", report.model.display());
    }
    Ok(())
}
