//! One module per subcommand, each with `pub fn run(args, global) -> anyhow::Result<()>`.

pub mod bench;
pub mod build;
pub mod check;
pub mod data;
pub mod distill;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod train;

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::cli::DataArgs;
use crate::data::DataSource;

/// Applies `--data` / `--data-path` over a config's data source (or builds one from them).
pub fn resolve_data(base: Option<DataSource>, args: &DataArgs) -> Result<DataSource> {
    let mut table = match (&args.data, base) {
        (Some(kind), _) => {
            let mut t = toml::Table::new();
            t.insert("kind".into(), toml::Value::String(kind.clone()));
            t
        }
        (None, Some(source)) => toml::Table::try_from(&source).context("serialising [data]")?,
        (None, None) => bail!(
            "no dataset given: pass --config FILE, or --data KIND (fashion-mnist, mnist, cifar10, cifar100, folder, synthetic) and --data-path DIR"
        ),
    };
    if let Some(path) = &args.data_path {
        table.insert(
            "path".into(),
            toml::Value::String(path.to_string_lossy().into_owned()),
        );
    }
    let kind = table
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_string();
    toml::Value::Table(table)
        .try_into::<DataSource>()
        .map_err(|e| anyhow::anyhow!("--data {kind}: {}", e.to_string().trim()))
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Reads the `[data]` section of a config file (any of the project's config kinds).
pub fn data_section(config: &Path) -> Result<DataSource> {
    #[derive(serde::Deserialize)]
    struct OnlyData {
        data: DataSource,
    }
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("reading config {}", config.display()))?;
    let value: toml::Table =
        toml::from_str(&text).with_context(|| format!("{}: not valid TOML", config.display()))?;
    let mut table = toml::Table::new();
    let data = value
        .get("data")
        .cloned()
        .with_context(|| format!("{}: no [data] section", config.display()))?;
    table.insert("data".into(), data);
    let parsed: OnlyData = toml::Value::Table(table)
        .try_into()
        .map_err(|e| anyhow::anyhow!("{}: [data]: {}", config.display(), e.to_string().trim()))?;
    let base = config.parent().unwrap_or(Path::new("."));
    Ok(parsed.data.relative_to(base))
}

/// The data source for a model in `dir`: `--config`'s `[data]`, else the `config.toml` saved
/// beside the model, with `--data`/`--data-path` applied over it.
pub fn data_for_model(dir: &Path, config: Option<&Path>, args: &DataArgs) -> Result<DataSource> {
    let base = match config {
        Some(c) => Some(data_section(c)?),
        None => {
            let beside = dir.join(crate::train::supervised::CONFIG_FILE);
            beside
                .is_file()
                .then(|| data_section(&beside))
                .transpose()?
        }
    };
    resolve_data(base, args)
}

/// The splits a training run uses: the source loaded, with `validation` held out of the
/// training split and standing in for the test split when the config asks for it.
pub fn training_splits(
    source: &crate::data::DataSource,
    validation: Option<&crate::data::split::ValidationSplit>,
    reporter: &crate::progress::Reporter,
) -> Result<crate::data::Splits> {
    let loaded = crate::data::load(source)?;
    Ok(match validation {
        None => loaded,
        Some(v) => {
            reporter.line(format!(
                "holding {} training images out for validation (seed {}); the per-epoch and final figures are on them",
                v.images, v.seed
            ));
            crate::data::split::hold_out(&loaded, v)?.for_validation()
        }
    })
}
