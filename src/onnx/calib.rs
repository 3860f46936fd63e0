//! Activation ranges from calibration samples: min-max, percentile, or the range that
//! minimises the quantization error (MSE) of the observed values. Pure numbers; which images
//! are run and how is `onnx::export`'s business.

use serde::{Deserialize, Serialize};

use super::qdq::activation_qparams;
pub use crate::config::quant::Calibration;

/// Histogram bins used by the MSE search.
const BINS: usize = 2048;
/// Clipping factors tried by the MSE search: the range shrunk to 100%, 99%, ..., 20%.
const MSE_STEPS: usize = 81;

/// Errors of the range estimation.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CalibrationError {
    /// No values were observed for a tensor.
    #[error("no calibration values for tensor {0:?}")]
    Empty(String),
    /// A non-finite value was observed.
    #[error("tensor {tensor:?} holds a non-finite value ({value}) on the calibration images")]
    NonFinite {
        /// Tensor name.
        tensor: String,
        /// The value.
        value: f32,
    },
}

/// How a range was chosen, for reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RangeChoice {
    /// Observed (min, max).
    pub observed: (f32, f32),
    /// The range used.
    pub chosen: (f32, f32),
}

/// The range of `values` (the calibration samples of tensor `name`) under `method`.
pub fn range(
    name: &str,
    values: &[f32],
    method: &Calibration,
) -> Result<RangeChoice, CalibrationError> {
    if values.is_empty() {
        return Err(CalibrationError::Empty(name.into()));
    }
    if let Some(&value) = values.iter().find(|v| !v.is_finite()) {
        return Err(CalibrationError::NonFinite {
            tensor: name.into(),
            value,
        });
    }
    let observed = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let chosen = match method {
        Calibration::MinMax => observed,
        Calibration::Percentile { percentile } => {
            let mut sorted = values.to_vec();
            sorted.sort_by(f32::total_cmp);
            let at = |q: f64| {
                let i = ((sorted.len() - 1) as f64 * q).round() as usize;
                sorted[i.min(sorted.len() - 1)]
            };
            let p = percentile / 100.0;
            (at(1.0 - p), at(p))
        }
        Calibration::Mse => mse_range(values, observed),
    };
    Ok(RangeChoice { observed, chosen })
}

/// Squared error of fake-quantizing `v` to uint8 with this scale and zero point.
fn fake_quant_error(v: f64, scale: f64, zero_point: f64) -> f64 {
    let q = (v / scale + zero_point).round().clamp(0.0, 255.0);
    let back = (q - zero_point) * scale;
    (v - back) * (v - back)
}

/// The shrunk range `(lo * a, hi * a)` (a in [0.2, 1]) whose uint8 fake quantization has the
/// smallest mean squared error over a histogram of `values`.
fn mse_range(values: &[f32], (lo, hi): (f32, f32)) -> (f32, f32) {
    let (lo0, hi0) = (f64::from(lo.min(0.0)), f64::from(hi.max(0.0)));
    let width = hi0 - lo0;
    if width <= 0.0 {
        return (lo, hi);
    }
    let mut counts = vec![0u64; BINS];
    for &v in values {
        let b = ((f64::from(v) - lo0) / width * BINS as f64) as usize;
        counts[b.min(BINS - 1)] += 1;
    }
    let centre = |b: usize| lo0 + (b as f64 + 0.5) * width / BINS as f64;
    let mut best = (f64::INFINITY, 1.0);
    for step in 0..MSE_STEPS {
        let a = 1.0 - step as f64 / 100.0;
        let (l, h) = ((lo0 * a) as f32, (hi0 * a) as f32);
        let Ok((scale, zp)) = activation_qparams("", (l, h), false) else {
            continue;
        };
        let err: f64 = counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(b, &c)| c as f64 * fake_quant_error(centre(b), f64::from(scale), f64::from(zp)))
            .sum();
        // Strictly better only: ties keep the wider range.
        if err < best.0 {
            best = (err, a);
        }
    }
    ((lo0 * best.1) as f32, (hi0 * best.1) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32 / (n - 1) as f32).collect()
    }

    #[test]
    fn min_max_is_the_observed_range() {
        let r = range("t", &[0.5, -1.0, 3.0], &Calibration::MinMax).unwrap();
        assert_eq!(r.observed, (-1.0, 3.0));
        assert_eq!(r.chosen, (-1.0, 3.0));
    }

    #[test]
    fn percentile_clips_outliers() {
        let mut v = ramp(10_001);
        v.push(1000.0);
        let r = range("t", &v, &Calibration::Percentile { percentile: 99.9 }).unwrap();
        assert_eq!(r.observed, (0.0, 1000.0));
        assert!(r.chosen.1 < 1.0 && r.chosen.1 > 0.99, "{:?}", r.chosen);
        assert!(r.chosen.0 > 0.0 && r.chosen.0 < 0.002, "{:?}", r.chosen);
        // 100 % is min-max.
        let r = range("t", &v, &Calibration::Percentile { percentile: 100.0 }).unwrap();
        assert_eq!(r.chosen, (0.0, 1000.0));
    }

    #[test]
    fn mse_clips_a_long_tail_but_not_a_uniform_range() {
        // Exponential values (quantiles of Exp(1)): a long tail up to about 12.
        let n = 100_000;
        let v: Vec<f32> = (0..n)
            .map(|i| -((i as f64 + 0.5) / n as f64).ln() as f32)
            .collect();
        let r = range("t", &v, &Calibration::Mse).unwrap();
        assert!(r.chosen.1 < r.observed.1, "the tail is clipped: {r:?}");
        let sse = |(lo, hi): (f32, f32)| {
            let (s, zp) = activation_qparams("", (lo, hi), false).unwrap();
            v.iter()
                .map(|&x| fake_quant_error(f64::from(x), f64::from(s), f64::from(zp)))
                .sum::<f64>()
        };
        assert!(sse(r.chosen) < sse(r.observed), "and the error is smaller");
        let v = ramp(100_000);
        let r = range("t", &v, &Calibration::Mse).unwrap();
        assert!(r.chosen.1 > 0.97, "a uniform range is kept: {r:?}");
        // Constant zero: the range stays (0, 0).
        assert_eq!(
            range("t", &[0.0; 4], &Calibration::Mse).unwrap().chosen,
            (0.0, 0.0)
        );
    }

    #[test]
    fn empty_and_non_finite_are_errors() {
        assert_eq!(
            range("t", &[], &Calibration::MinMax),
            Err(CalibrationError::Empty("t".into()))
        );
        let e = range("act", &[1.0, f32::NAN], &Calibration::Mse)
            .unwrap_err()
            .to_string();
        assert!(e.contains("act"), "{e}");
    }
}
