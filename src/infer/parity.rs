//! Output comparisons with named tolerances, the one place that defines them.

use serde::Serialize;

/// How close two outputs must be.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tolerance {
    /// Bit-identical.
    Exact,
    /// Two float implementations of the same graph: atol 1e-4, rtol 5e-4 (as tract's tests).
    Approximate,
    /// A quantized model against another runtime running the same quantized graph: atol 0.1,
    /// rtol 0.02. ONNX Runtime fuses QDQ pairs into integer kernels (QLinearConv) while tract
    /// computes them in float, so requantised activations can round differently by a step or
    /// more; measured on the Fashion-MNIST student: max |logit diff| 0.066 with identical top-1.
    Quantized,
}

impl Tolerance {
    /// (atol, rtol).
    pub fn bounds(self) -> (f32, f32) {
        match self {
            Tolerance::Exact => (0.0, 0.0),
            Tolerance::Approximate => (1e-4, 5e-4),
            Tolerance::Quantized => (0.1, 0.02),
        }
    }
}

/// Result of comparing two outputs element by element.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Parity {
    /// Largest |a - b|.
    pub max_abs: f32,
    /// Largest |a - b| / max(|b|, 1e-6).
    pub max_rel: f32,
    /// Tolerance applied.
    pub tolerance: Tolerance,
    /// Every element finite and within `atol + rtol * |b|`.
    pub ok: bool,
    /// What failed, when not ok.
    pub problem: Option<String>,
}

/// Compares `a` (the candidate) with `b` (the reference). Non-finite values fail first:
/// NaN == NaN would otherwise pass a naive comparison.
pub fn compare(a: &[f32], b: &[f32], tolerance: Tolerance) -> Parity {
    let (atol, rtol) = tolerance.bounds();
    let mut p = Parity {
        max_abs: 0.0,
        max_rel: 0.0,
        tolerance,
        ok: true,
        problem: None,
    };
    if a.len() != b.len() {
        p.ok = false;
        p.problem = Some(format!(
            "{} values vs {} in the reference",
            a.len(),
            b.len()
        ));
        return p;
    }
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        if !x.is_finite() || !y.is_finite() {
            p.ok = false;
            p.problem = Some(format!("value {i} is not finite ({x} vs {y})"));
            return p;
        }
        let d = (x - y).abs();
        p.max_abs = p.max_abs.max(d);
        p.max_rel = p.max_rel.max(d / y.abs().max(1e-6));
        if d > atol + rtol * y.abs() && p.ok {
            p.ok = false;
            p.problem = Some(format!(
                "value {i}: {x} vs {y} (|diff| {d:.3e} > {atol:e} + {rtol:e} * |ref|)"
            ));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_never_passes() {
        let p = compare(&[f32::NAN], &[f32::NAN], Tolerance::Approximate);
        assert!(!p.ok && p.problem.unwrap().contains("not finite"));
    }

    #[test]
    fn tolerance_bounds_are_applied() {
        assert!(compare(&[1.0004], &[1.0], Tolerance::Approximate).ok);
        assert!(!compare(&[1.001], &[1.0], Tolerance::Approximate).ok);
        assert!(!compare(&[1.0], &[1.0, 2.0], Tolerance::Exact).ok);
        let p = compare(&[2.0, 3.0], &[2.0, 3.0], Tolerance::Exact);
        assert!(p.ok && p.max_abs == 0.0);
    }
}
