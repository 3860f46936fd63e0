//! `distill-edge inspect MODEL.onnx [--input CxHxW] [--student SPEC]`.

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::{GlobalArgs, InspectArgs};
use crate::data::ImageShape;
use crate::model::ModelSpec;
use crate::onnx::graph::{self, GraphInfo, TapProposal};
use crate::onnx::proto;
use crate::table::Table;

/// The report.
#[derive(Debug, Serialize)]
struct Report {
    model: String,
    #[serde(flatten)]
    graph: GraphInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    student: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    taps: Vec<TapProposal>,
}

fn shape_text(s: Option<[i64; 3]>) -> String {
    s.map_or("?".into(), |[c, h, w]| format!("{c}x{h}x{w}"))
}

/// Runs `inspect`.
pub fn run(args: &InspectArgs, global: &GlobalArgs) -> Result<()> {
    let path = &args.model;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let model = proto::decode(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let info = graph::analyse(&model, args.input)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut taps = Vec::new();
    if let Some(student) = &args.student {
        let input = info
            .inputs
            .first()
            .and_then(|i| i.shape.clone())
            .and_then(|s| match s[..] {
                [_, c, h, w] => Some(ImageShape::new(c as usize, h as usize, w as usize)),
                _ => None,
            })
            .context("the model's input is not an NCHW image")?;
        let classes = info
            .outputs
            .first()
            .and_then(|o| o.shape.as_ref())
            .and_then(|s| s.last().copied())
            .map_or(2, |c| (c as usize).max(2));
        let spec = ModelSpec::resolve(student, std::path::Path::new("."))?;
        let arch = spec.bind(input, classes)?;
        taps = graph::propose_taps(&info, &arch);
    }
    let report = Report {
        model: path.display().to_string(),
        graph: info,
        student: args.student.clone(),
        taps,
    };
    if global.json {
        return super::print_json(&report);
    }
    let g = &report.graph;
    let mut t = Table::new(["tensor", "role", "declared", "shape (batch 1)"]);
    for (role, list) in [("input", &g.inputs), ("output", &g.outputs)] {
        for i in list {
            t.row([
                i.name.clone(),
                role.to_string(),
                format!("[{}]", i.declared.join(", ")),
                i.shape.as_ref().map_or("?".into(), |s| format!("{s:?}")),
            ]);
        }
    }
    print!("{}", t.render());
    println!(
        "{} nodes, opset {}, {} parameters, {} MACs{}",
        g.nodes,
        g.opset.map_or("?".into(), |o| o.to_string()),
        g.parameters,
        g.macs,
        if g.macs_unknown_nodes > 0 {
            format!(" (+ {} nodes of unknown shape)", g.macs_unknown_nodes)
        } else {
            String::new()
        }
    );
    if g.unsupported.is_empty() {
        println!("tract: every op is supported");
    } else {
        println!(
            "tract cannot run: {}",
            g.unsupported
                .iter()
                .map(|u| format!("{} (x{}, first '{}')", u.op, u.count, u.first_node))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut t = Table::new(["conv", "groups", "output", "tap", "tap shape / why not"]);
    for c in &g.convs {
        t.row([
            c.node.clone(),
            c.groups.to_string(),
            shape_text(c.output_shape),
            c.tap.clone().unwrap_or_else(|| "-".into()),
            match &c.refused {
                Some(r) => r.clone(),
                None => shape_text(c.tap_shape),
            },
        ]);
    }
    print!("{}", t.render());
    if !report.taps.is_empty() {
        let mut t = Table::new(["student block", "shape", "teacher conv", "tap", "tap shape"]);
        for p in &report.taps {
            t.row([
                p.block.to_string(),
                p.student_shape.to_string(),
                p.conv.clone().unwrap_or_else(|| "-".into()),
                p.tap.clone().unwrap_or_else(|| "-".into()),
                match &p.problem {
                    Some(m) => m.clone(),
                    None => shape_text(p.tap_shape),
                },
            ]);
        }
        print!("{}", t.render());
    }
    Ok(())
}
