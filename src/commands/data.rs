//! `distill-edge data info` and `distill-edge data make`.

use anyhow::Result;
use serde::Serialize;

use crate::cli::{DataCommand, DataInfoArgs, DataMakeArgs, GlobalArgs};
use crate::data::prep::Normalization;
use crate::data::{self, Dataset, ImageShape};
use crate::table::Table;

/// Description of one split.
#[derive(Debug, Serialize)]
pub struct SplitInfo {
    /// Split name.
    pub name: String,
    /// Images.
    pub images: usize,
    /// Image shape, channels first.
    pub shape: ImageShape,
    /// Images per class, index = label.
    pub class_counts: Vec<usize>,
    /// Per-channel pixel mean and std (pixels scaled to [0, 1]).
    pub normalization: Normalization,
}

/// Description of a dataset.
#[derive(Debug, Serialize)]
pub struct DataInfo {
    /// Source kind.
    pub kind: String,
    /// Class names.
    pub classes: Vec<String>,
    /// Train and test splits.
    pub splits: Vec<SplitInfo>,
}

fn split_info(ds: &Dataset) -> SplitInfo {
    SplitInfo {
        name: ds.name.clone(),
        images: ds.len(),
        shape: ds.shape,
        class_counts: ds.class_counts(),
        normalization: Normalization::from_dataset(ds),
    }
}

/// Dispatches `data` subcommands.
pub fn run(command: &DataCommand, global: &GlobalArgs) -> Result<()> {
    match command {
        DataCommand::Info(args) => info(args, global),
        DataCommand::Make(args) => make(args, global),
    }
}

fn make(args: &DataMakeArgs, global: &GlobalArgs) -> Result<()> {
    let base = args
        .config
        .as_deref()
        .map(super::data_section)
        .transpose()?;
    let source = super::resolve_data(base, &args.data)?;
    let mut reporter = crate::progress::Reporter::new(global.quiet);
    reporter.line(format!("loading {}", source.name()));
    let splits = data::load(&source)?;
    let opts = data::write::FolderOptions {
        side: args.size,
        channels: args.channels,
        train: args.train,
        test: args.test,
        colourise: !args.no_colour,
        seed: args.seed,
    };
    let total = args
        .train
        .unwrap_or(splits.train.len())
        .min(splits.train.len())
        + args
            .test
            .unwrap_or(splits.test.len())
            .min(splits.test.len());
    reporter.start_bar(total as u64, "writing");
    let summary = {
        let r = &reporter;
        data::write::write_folder(&splits, &args.out, &opts, &|_| r.advance(1, String::new))?
    };
    reporter.finish_bar();
    if global.json {
        return super::print_json(&summary);
    }
    let mut t = Table::new(["folder", "shape", "classes", "train", "test"]);
    t.row([
        summary.path.display().to_string(),
        summary.shape.to_string(),
        summary.classes.len().to_string(),
        summary.train.to_string(),
        summary.test.to_string(),
    ]);
    print!("{}", t.render());
    Ok(())
}

fn info(args: &DataInfoArgs, global: &GlobalArgs) -> Result<()> {
    let base = args
        .config
        .as_deref()
        .map(super::data_section)
        .transpose()?;
    let source = super::resolve_data(base, &args.data)?;
    let splits = data::load(&source)?;
    let info = DataInfo {
        kind: source.name().to_string(),
        classes: splits.train.classes.clone(),
        splits: vec![split_info(&splits.train), split_info(&splits.test)],
    };
    if global.json {
        return super::print_json(&info);
    }
    let mut t = Table::new(["split", "images", "shape", "mean", "std"]);
    for s in &info.splits {
        let f = |v: &[f32]| {
            v.iter()
                .map(|x| format!("{x:.4}"))
                .collect::<Vec<_>>()
                .join("/")
        };
        t.row([
            s.name.clone(),
            s.images.to_string(),
            s.shape.to_string(),
            f(&s.normalization.mean),
            f(&s.normalization.std),
        ]);
    }
    println!("{}", t.render());
    let mut c = Table::new(["label", "class", "train", "test"]);
    for (i, name) in info.classes.iter().enumerate() {
        c.row([
            i.to_string(),
            name.clone(),
            info.splits[0].class_counts[i].to_string(),
            info.splits[1]
                .class_counts
                .get(i)
                .copied()
                .unwrap_or(0)
                .to_string(),
        ]);
    }
    print!("{}", c.render());
    Ok(())
}
