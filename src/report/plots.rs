//! The report's SVG plots, drawn with plotters' SVG backend.
//!
//! plotters is built without a font backend, so it estimates text extents itself and writes
//! `<text>` elements that the browser (or any SVG renderer) lays out with its own fonts.

use std::collections::HashSet;
use std::error::Error;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::doc::host_model;
use super::fmt;
use super::{Curve, Plot, ReportInput};
use crate::train::EpochRecord;

type PlotResult<T> = Result<T, Box<dyn Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const WIDTH: u32 = 960;
const INK: RGBColor = RGBColor(31, 41, 55);
const MUTED: RGBColor = RGBColor(107, 114, 128);
const GRID: RGBColor = RGBColor(209, 213, 219);
const ACCURACY: RGBColor = RGBColor(37, 99, 235);
const ACCURACY_LIGHT: RGBColor = RGBColor(147, 180, 250);
const LOSS: RGBColor = RGBColor(220, 88, 22);
const LOSS_LIGHT: RGBColor = RGBColor(250, 170, 120);
/// Fills of the curriculum bands, alternating so adjacent blocks stay distinguishable.
pub(super) const BAND_FILLS: [RGBColor; 2] = [RGBColor(254, 243, 199), RGBColor(253, 226, 160)];
const BAND_TEXT: RGBColor = RGBColor(146, 64, 14);
/// One colour per latency source (host engine or device target).
const SOURCE_COLORS: [RGBColor; 6] = [
    RGBColor(37, 99, 235),
    RGBColor(5, 150, 105),
    RGBColor(217, 119, 6),
    RGBColor(124, 58, 237),
    RGBColor(219, 39, 119),
    RGBColor(8, 145, 178),
];
const FONT: &str = "sans-serif";

/// A text style; plotters writes `font-size = size / 1.24` into the SVG.
fn text(size: f64, color: &RGBColor) -> TextStyle<'static> {
    (FONT, size).into_font().color(color)
}

/// Renders every plot the input has data for: one training curve per non-empty curve, then the
/// latency plot when any latency was measured.
pub(super) fn render_all(input: &ReportInput) -> PlotResult<Vec<Plot>> {
    let mut used = HashSet::new();
    let mut plots = Vec::new();
    for curve in input.curves.iter().filter(|c| !c.epochs.is_empty()) {
        let base = format!("curve-{}", fmt::slug(&curve.stage));
        let mut file = format!("{base}.svg");
        let mut n = 2;
        while !used.insert(file.clone()) {
            file = format!("{base}-{n}.svg");
            n += 1;
        }
        plots.push(Plot {
            file,
            title: format!("Training curve: {}", curve.stage),
            svg: curve_svg(curve)?,
        });
    }
    let rows = latency_rows(input);
    if !rows.is_empty() {
        plots.push(Plot {
            file: "latency.svg".into(),
            title: "Latency distribution per engine / device, model and batch".into(),
            svg: latency_svg(&rows)?,
        });
    }
    Ok(plots)
}

/// A run of consecutive epochs sharing one phase.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PhaseRun {
    /// `block0` for `curriculum:block0`, `main` for `main:indistill`, the phase otherwise.
    pub label: String,
    /// Whether the phase is a curriculum block (shaded).
    pub curriculum: bool,
    /// Index of the run's first epoch.
    pub first: usize,
    /// Index of the run's last epoch.
    pub last: usize,
}

/// Groups consecutive epochs by phase.
pub(super) fn phase_runs(epochs: &[EpochRecord]) -> Vec<PhaseRun> {
    let mut runs: Vec<PhaseRun> = Vec::new();
    let mut prev: Option<&str> = None;
    for (i, e) in epochs.iter().enumerate() {
        if prev == Some(e.phase.as_str()) {
            if let Some(r) = runs.last_mut() {
                r.last = i;
            }
            continue;
        }
        prev = Some(e.phase.as_str());
        let (label, curriculum) = match e.phase.strip_prefix("curriculum:") {
            Some(block) => (block.to_string(), true),
            None => (
                e.phase.split(':').next().unwrap_or(&e.phase).to_string(),
                false,
            ),
        };
        runs.push(PhaseRun {
            label,
            curriculum,
            first: i,
            last: i,
        });
    }
    runs
}

/// X positions: the epoch numbers when they increase strictly, else 1, 2, 3, ...
fn epoch_xs(epochs: &[EpochRecord]) -> Vec<f64> {
    let increasing = epochs.windows(2).all(|w| w[0].epoch < w[1].epoch);
    epochs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if increasing {
                e.epoch as f64
            } else {
                (i + 1) as f64
            }
        })
        .collect()
}

/// Splits `(x, y?)` into contiguous runs of finite points, so a missing value breaks the line.
fn segments(points: impl IntoIterator<Item = (f64, Option<f64>)>) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for (x, y) in points {
        match y {
            Some(y) if y.is_finite() => out.last_mut().map_or((), |s| s.push((x, y))),
            _ => {
                if out.last().is_some_and(|s| !s.is_empty()) {
                    out.push(Vec::new());
                }
            }
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// An axis range covering `values` with some headroom, `clamp` bounding it.
fn padded(values: impl Iterator<Item = f64>, step: f64, clamp: (f64, f64)) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return clamp;
    }
    let lo = (((lo - step * 0.5) / step).floor() * step).max(clamp.0);
    let mut hi = (((hi + step * 0.5) / step).ceil() * step).min(clamp.1);
    if hi <= lo {
        hi = lo + step;
    }
    (lo, hi)
}

fn curve_svg(curve: &Curve) -> PlotResult<String> {
    let epochs = &curve.epochs;
    let xs = epoch_xs(epochs);
    let runs = phase_runs(epochs);
    let shaded = runs.iter().any(|r| r.curriculum);
    let x_lo = xs.first().copied().unwrap_or(1.0) - 0.5;
    let x_hi = xs.last().copied().unwrap_or(1.0) + 0.5;
    let n_labels = epochs.len().clamp(2, 16);
    let epoch_label = |v: &f64| {
        if (v - v.round()).abs() < 1e-6 {
            format!("{v:.0}")
        } else {
            String::new()
        }
    };

    let test_acc: Vec<(f64, Option<f64>)> = xs
        .iter()
        .zip(epochs)
        .map(|(&x, e)| (x, Some(100.0 * e.test_accuracy)))
        .collect();
    let train_acc: Vec<(f64, Option<f64>)> = xs
        .iter()
        .zip(epochs)
        .map(|(&x, e)| (x, e.train_accuracy.map(|a| 100.0 * a)))
        .collect();
    let train_loss: Vec<(f64, Option<f64>)> = xs
        .iter()
        .zip(epochs)
        .map(|(&x, e)| (x, Some(e.train_loss)))
        .collect();
    let test_loss: Vec<(f64, Option<f64>)> = xs
        .iter()
        .zip(epochs)
        .map(|(&x, e)| (x, Some(e.test_loss)))
        .collect();
    let (acc_lo, acc_hi) = padded(
        test_acc.iter().chain(&train_acc).filter_map(|(_, y)| *y),
        5.0,
        (0.0, 100.0),
    );
    let loss_max = train_loss
        .iter()
        .chain(&test_loss)
        .filter_map(|(_, y)| *y)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let loss_hi = if loss_max > 0.0 { loss_max * 1.1 } else { 1.0 };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let (head, body) = root.split_vertically(58);
        head.draw(&Text::new(
            format!("Training curve: {}", curve.stage),
            (18, 12),
            (FONT, 21.0).into_font().style(FontStyle::Bold).color(&INK),
        ))?;
        head.draw(&Text::new(
            curve_subtitle(curve, &xs, shaded),
            (18, 38),
            text(15.0, &MUTED),
        ))?;
        let (top, bottom) = body.split_vertically(300);

        let mut acc = ChartBuilder::on(&top)
            .margin_left(14)
            .margin_right(28)
            .margin_top(6)
            .margin_bottom(6)
            .x_label_area_size(0)
            .y_label_area_size(70)
            .build_cartesian_2d(x_lo..x_hi, acc_lo..acc_hi)?;
        draw_bands(&mut acc, &runs, &xs, acc_lo, acc_hi)?;
        acc.configure_mesh()
            .x_labels(n_labels)
            .y_labels(8)
            .x_label_formatter(&epoch_label)
            .y_label_formatter(&|v| format!("{v:.0}%"))
            .y_desc("top-1 accuracy")
            .label_style(text(15.0, &INK))
            .axis_desc_style(text(15.0, &INK))
            .bold_line_style(GRID.mix(0.7))
            .light_line_style(GRID.mix(0.25))
            .draw()?;
        draw_line(
            &mut acc,
            &test_acc,
            ACCURACY,
            false,
            &format!("{} top-1", curve.evaluated_on),
        )?;
        if epochs.len() <= 60 {
            let points = segments(test_acc.iter().copied()).concat();
            acc.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, ACCURACY.filled())),
            )?;
        }
        draw_line(
            &mut acc,
            &train_acc,
            ACCURACY_LIGHT,
            true,
            "train top-1 (augmented)",
        )?;
        label_phases(&mut acc, &runs, &xs, acc_hi)?;
        acc.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .margin(10)
            .label_font(text(14.0, &INK))
            .background_style(WHITE.mix(0.9))
            .border_style(GRID)
            .draw()?;

        let mut loss = ChartBuilder::on(&bottom)
            .margin_left(14)
            .margin_right(28)
            .margin_top(6)
            .margin_bottom(8)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(x_lo..x_hi, 0.0..loss_hi)?;
        draw_bands(&mut loss, &runs, &xs, 0.0, loss_hi)?;
        loss.configure_mesh()
            .x_labels(n_labels)
            .y_labels(5)
            .x_label_formatter(&epoch_label)
            .y_label_formatter(&|v| format!("{v:.2}"))
            .x_desc("epoch")
            .y_desc("loss")
            .label_style(text(15.0, &INK))
            .axis_desc_style(text(15.0, &INK))
            .bold_line_style(GRID.mix(0.7))
            .light_line_style(GRID.mix(0.25))
            .draw()?;
        draw_line(&mut loss, &train_loss, LOSS, false, "train loss")?;
        draw_line(
            &mut loss,
            &test_loss,
            LOSS_LIGHT,
            true,
            &format!("{} loss (cross-entropy)", curve.evaluated_on),
        )?;
        loss.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(10)
            .label_font(text(14.0, &INK))
            .background_style(WHITE.mix(0.9))
            .border_style(GRID)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Draws one metric as a line (dashed or solid), broken where values are missing; only the
/// first piece gets the legend entry.
fn draw_line(
    chart: &mut Chart<'_, '_>,
    points: &[(f64, Option<f64>)],
    color: RGBColor,
    dashed: bool,
    label: &str,
) -> PlotResult<()> {
    for (i, seg) in segments(points.iter().copied()).into_iter().enumerate() {
        let style = color.stroke_width(2);
        let series = if dashed {
            chart.draw_series(DashedLineSeries::new(seg, 7, 4, style))?
        } else {
            chart.draw_series(LineSeries::new(seg, style))?
        };
        if i == 0 {
            series.label(label).legend(move |(x, y)| {
                PathElement::new(vec![(x - 10, y), (x + 10, y)], color.stroke_width(3))
            });
        }
    }
    Ok(())
}

/// `12 epochs · best test top-1 91.20% (epoch 11) · shaded: curriculum blocks` (`validation`
/// instead of `test` when the build holds validation images out).
fn curve_subtitle(curve: &Curve, xs: &[f64], shaded: bool) -> String {
    let best = curve
        .epochs
        .iter()
        .zip(xs)
        .filter(|(e, _)| e.test_accuracy.is_finite())
        .max_by(|(a, _), (b, _)| a.test_accuracy.total_cmp(&b.test_accuracy));
    let mut s = format!("{} epochs", curve.epochs.len());
    if let Some((e, x)) = best {
        s.push_str(&format!(
            " · best {} top-1 {} (epoch {x:.0})",
            curve.evaluated_on,
            fmt::pct(e.test_accuracy)
        ));
    }
    if let Some(last) = curve.epochs.last() {
        s.push_str(&format!(" · final {}", fmt::pct(last.test_accuracy)));
    }
    if shaded {
        s.push_str(" · shaded: curriculum blocks");
    }
    s
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Shades each curriculum run over the whole height of the panel.
fn draw_bands(
    chart: &mut Chart<'_, '_>,
    runs: &[PhaseRun],
    xs: &[f64],
    y_lo: f64,
    y_hi: f64,
) -> PlotResult<()> {
    let bands = runs.iter().filter(|r| r.curriculum).enumerate();
    chart.draw_series(bands.map(|(i, r)| {
        Rectangle::new(
            [(xs[r.first] - 0.5, y_lo), (xs[r.last] + 0.5, y_hi)],
            BAND_FILLS[i % BAND_FILLS.len()].filled(),
        )
    }))?;
    Ok(())
}

/// Names each phase at the top of the panel: curriculum blocks in the band colour, the other
/// phases (e.g. `main`) in grey, and only when the curve has a curriculum at all.
fn label_phases(
    chart: &mut Chart<'_, '_>,
    runs: &[PhaseRun],
    xs: &[f64],
    y_hi: f64,
) -> PlotResult<()> {
    if !runs.iter().any(|r| r.curriculum) {
        return Ok(());
    }
    let style = |c: &RGBColor| text(14.0, c).pos(Pos::new(HPos::Center, VPos::Top));
    let mut labels = Vec::new();
    for r in runs {
        let (x0, _) = chart.backend_coord(&(xs[r.first] - 0.5, y_hi));
        let (x1, _) = chart.backend_coord(&(xs[r.last] + 0.5, y_hi));
        let width = (x1 - x0).abs();
        // Long schedules make narrow bands: fall back to the block number, then to nothing.
        let label = if width >= 7 * r.label.chars().count() as i32 + 6 {
            r.label.clone()
        } else {
            let digits: String = r.label.chars().filter(char::is_ascii_digit).collect();
            if digits.is_empty() || width < 7 * digits.len() as i32 + 4 {
                continue;
            }
            digits
        };
        let mid = (xs[r.first] + xs[r.last]) / 2.0;
        let color = if r.curriculum { BAND_TEXT } else { MUTED };
        labels.push(EmptyElement::at((mid, y_hi)) + Text::new(label, (0, 5), style(&color)));
    }
    chart.draw_series(labels)?;
    Ok(())
}

/// One latency distribution: a source (host engine or device), a model and a batch size.
#[derive(Debug, Clone)]
pub(super) struct LatencyRow {
    pub source: String,
    pub model: String,
    pub batch: usize,
    pub emulated: bool,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl LatencyRow {
    fn label(&self) -> String {
        let emulated = if self.emulated { " (emulated)" } else { "" };
        format!(
            "{} · {} · batch {}{emulated}",
            self.source, self.model, self.batch
        )
    }

    fn values(&self) -> [f64; 5] {
        [self.min, self.p50, self.p90, self.p99, self.max]
    }
}

/// Every measured latency, grouped by batch size (host first within a batch).
pub(super) fn latency_rows(input: &ReportInput) -> Vec<LatencyRow> {
    let mut rows = Vec::new();
    for (i, e) in input.host_checks.iter().enumerate() {
        for l in &e.latency {
            let s = &l.stats;
            rows.push(LatencyRow {
                source: format!("host {}", e.engine),
                model: host_model(input, i).to_string(),
                batch: l.batch,
                emulated: false,
                min: s.min_ms,
                p50: s.p50_ms,
                p90: s.p90_ms,
                p99: s.p99_ms,
                max: s.max_ms,
            });
        }
    }
    for d in &input.devices {
        for m in &d.models {
            for l in &m.device.latency {
                rows.push(LatencyRow {
                    source: d.target.clone(),
                    model: m.model.clone(),
                    batch: l.batch,
                    emulated: d.emulated,
                    min: l.min_ms,
                    p50: l.p50_ms,
                    p90: l.p90_ms,
                    p99: l.p99_ms,
                    max: l.max_ms,
                });
            }
        }
    }
    rows.retain(|r| r.values().iter().all(|v| v.is_finite() && *v >= 0.0));
    rows.sort_by_key(|r| r.batch);
    rows
}

const ROW_HEIGHT: u32 = 34;
const LAT_TOP: u32 = 70;
const LAT_BOTTOM: u32 = 100;
const LAT_RIGHT: u32 = 120;

fn latency_svg(rows: &[LatencyRow]) -> PlotResult<String> {
    let height = LAT_TOP + ROW_HEIGHT * rows.len() as u32 + LAT_BOTTOM;
    // Zero is not drawable on a log axis; a microsecond floor is far below any real run.
    let lo = rows
        .iter()
        .map(|r| r.min.max(1e-3))
        .fold(f64::INFINITY, f64::min);
    let hi = rows.iter().map(|r| r.max.max(1e-3)).fold(0.0, f64::max);
    let log = hi / lo > 20.0;
    let label_width = (rows
        .iter()
        .map(|r| r.label().chars().count())
        .max()
        .unwrap_or(10) as u32
        * 7
        + 28)
        .min(WIDTH / 2);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        root.draw(&Text::new(
            "Latency per run (ms)",
            (18, 12),
            (FONT, 21.0).into_font().style(FontStyle::Bold).color(&INK),
        ))?;
        let scale = if log { "log scale" } else { "linear scale" };
        let emulated = if rows.iter().any(|r| r.emulated) {
            " · emulated rows are not board figures"
        } else {
            ""
        };
        root.draw(&Text::new(
            format!("{} distributions · {scale}{emulated}", rows.len()),
            (18, 38),
            text(15.0, &MUTED),
        ))?;
        if log {
            latency_chart(&root, rows, (lo / 1.5..hi * 1.5).log_scale(), label_width)?;
        } else {
            latency_chart(&root, rows, 0.0..hi * 1.08, label_width)?;
        }
        latency_legend(&root, height)?;
        root.present()?;
    }
    Ok(svg)
}

fn latency_chart<X>(root: &Area<'_>, rows: &[LatencyRow], x: X, label_width: u32) -> PlotResult<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let n = rows.len();
    let y_of = |i: usize| (n - 1 - i) as f64;
    let mut chart = ChartBuilder::on(root)
        .margin_top(LAT_TOP - 8)
        .margin_bottom(LAT_BOTTOM - 56)
        .margin_left(14)
        .margin_right(LAT_RIGHT)
        .x_label_area_size(48)
        .y_label_area_size(label_width)
        .build_cartesian_2d(x, -0.5..(n as f64 - 0.5))?;
    let x_range = chart.x_range();
    let (x_lo, x_hi) = (x_range.start, x_range.end);
    // Zebra rows, drawn first so the grid stays on top.
    chart.draw_series((0..n).filter(|i| i % 2 == 1).map(|i| {
        let y = y_of(i);
        Rectangle::new(
            [(x_lo, y - 0.5), (x_hi, y + 0.5)],
            RGBColor(243, 244, 246).filled(),
        )
    }))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(12)
        .x_label_formatter(&|v| fmt::tick(*v))
        .x_desc("milliseconds per run")
        .label_style(text(15.0, &INK))
        .axis_desc_style(text(15.0, &INK))
        .bold_line_style(GRID.mix(0.8))
        .light_line_style(GRID.mix(0.3))
        .draw()?;

    let mut sources: Vec<&str> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let color = match sources.iter().position(|s| *s == r.source) {
            Some(k) => SOURCE_COLORS[k % SOURCE_COLORS.len()],
            None => {
                sources.push(&r.source);
                SOURCE_COLORS[(sources.len() - 1) % SOURCE_COLORS.len()]
            }
        };
        let y = y_of(i);
        let v = |x: f64| x.max(1e-3).clamp(x_lo, x_hi);
        chart.draw_series([
            PathElement::new(vec![(v(r.min), y), (v(r.max), y)], color.stroke_width(2)),
            PathElement::new(
                vec![(v(r.min), y - 0.16), (v(r.min), y + 0.16)],
                color.stroke_width(2),
            ),
            PathElement::new(
                vec![(v(r.max), y - 0.16), (v(r.max), y + 0.16)],
                color.stroke_width(2),
            ),
        ])?;
        chart.draw_series([
            Rectangle::new(
                [(v(r.p50), y - 0.28), (v(r.p90), y + 0.28)],
                color.mix(0.3).filled(),
            ),
            Rectangle::new(
                [(v(r.p50), y - 0.28), (v(r.p90), y + 0.28)],
                color.stroke_width(1),
            ),
        ])?;
        chart.draw_series([PathElement::new(
            vec![(v(r.p50), y - 0.36), (v(r.p50), y + 0.36)],
            INK.stroke_width(3),
        )])?;
        chart.draw_series([EmptyElement::at((v(r.p99), y))
            + Polygon::new(vec![(0, -6), (6, 0), (0, 6), (-6, 0)], INK.filled())])?;
        // Batch groups are separated by a dashed rule.
        if i > 0 && rows[i - 1].batch != r.batch {
            chart.draw_series([DashedPathElement::new(
                vec![(x_lo, y + 0.5), (x_hi, y + 0.5)],
                5,
                4,
                MUTED.stroke_width(1),
            )])?;
        }

        let (px, py) = chart.backend_coord(&(x_lo, y));
        let label_color = if r.emulated { BAND_TEXT } else { INK };
        root.draw(&Text::new(
            r.label(),
            (px - 10, py),
            text(15.0, &label_color).pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
        let (rx, _) = chart.backend_coord(&(x_hi, y));
        root.draw(&Text::new(
            format!("p50 {} ms", fmt::ms(r.p50)),
            (rx + 10, py),
            text(14.0, &MUTED).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

/// The glyph legend under the latency chart.
fn latency_legend(root: &Area<'_>, height: u32) -> PlotResult<()> {
    let y = height as i32 - 26;
    let mut x = 110;
    let label = |root: &Area<'_>, x: i32, s: &str| -> PlotResult<i32> {
        root.draw(&Text::new(
            s.to_string(),
            (x, y),
            text(15.0, &INK).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        Ok(x + 8 * s.chars().count() as i32 + 28)
    };
    let c = SOURCE_COLORS[0];
    root.draw(&PathElement::new(
        vec![(x, y), (x + 34, y)],
        c.stroke_width(2),
    ))?;
    root.draw(&PathElement::new(
        vec![(x, y - 5), (x, y + 5)],
        c.stroke_width(2),
    ))?;
    root.draw(&PathElement::new(
        vec![(x + 34, y - 5), (x + 34, y + 5)],
        c.stroke_width(2),
    ))?;
    x = label(root, x + 42, "min – max")?;
    root.draw(&Rectangle::new(
        [(x, y - 9), (x + 28, y + 9)],
        c.mix(0.3).filled(),
    ))?;
    root.draw(&Rectangle::new(
        [(x, y - 9), (x + 28, y + 9)],
        c.stroke_width(1),
    ))?;
    x = label(root, x + 36, "p50 – p90")?;
    root.draw(&PathElement::new(
        vec![(x, y - 11), (x, y + 11)],
        INK.stroke_width(3),
    ))?;
    x = label(root, x + 10, "p50 (median)")?;
    root.draw(&Polygon::new(
        vec![(x, y - 6), (x + 6, y), (x, y + 6), (x - 6, y)],
        INK.filled(),
    ))?;
    label(root, x + 12, "p99")?;
    Ok(())
}
