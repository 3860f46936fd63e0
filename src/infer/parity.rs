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

/// How [`Parity::problem`] starts when some values are NaN or infinite.
pub const NON_FINITE: &str = "non-finite values";

impl Parity {
    /// Whether the comparison failed on NaN or infinite values (then `max_abs` and `max_rel`
    /// only cover the finite pairs and do not describe the outputs).
    pub fn has_non_finite(&self) -> bool {
        self.problem
            .as_deref()
            .is_some_and(|p| p.starts_with(NON_FINITE))
    }
}

/// Compares `a` (the candidate) with `b` (the reference). Non-finite values always fail (NaN
/// == NaN would otherwise pass a naive comparison, and NaN differences would read as 0); the
/// maxima are taken over the finite pairs.
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
    let mut non_finite = 0usize;
    let mut first_non_finite = None;
    let mut first_outside = None;
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        if !x.is_finite() || !y.is_finite() {
            non_finite += 1;
            first_non_finite.get_or_insert((i, x, y));
            continue;
        }
        let d = (x - y).abs();
        p.max_abs = p.max_abs.max(d);
        p.max_rel = p.max_rel.max(d / y.abs().max(1e-6));
        if d > atol + rtol * y.abs() && first_outside.is_none() {
            first_outside = Some(format!(
                "value {i}: {x} vs {y} (|diff| {d:.3e} > {atol:e} + {rtol:e} * |ref|)"
            ));
        }
    }
    if let Some((i, x, y)) = first_non_finite {
        p.ok = false;
        p.problem = Some(format!(
            "{NON_FINITE}: {non_finite} of {} are NaN or infinite (first: value {i}, {x} vs {y})",
            a.len()
        ));
    } else if let Some(problem) = first_outside {
        p.ok = false;
        p.problem = Some(problem);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_never_passes() {
        let p = compare(&[f32::NAN], &[f32::NAN], Tolerance::Approximate);
        assert!(!p.ok && p.has_non_finite(), "{p:?}");
        assert!(p.problem.unwrap().contains("NaN"));
    }

    #[test]
    fn nan_outputs_are_flagged_not_reported_as_zero_difference() {
        // Every candidate value NaN against a finite reference: max |diff| must not pass for 0.
        let p = compare(
            &[f32::NAN; 4],
            &[1.0, 2.0, 3.0, 4.0],
            Tolerance::Approximate,
        );
        assert!(!p.ok && p.has_non_finite(), "{p:?}");
        assert!(p.problem.as_deref().unwrap().contains("4 of 4"), "{p:?}");
        // Mixed: the finite pairs still give the real maximum difference.
        let p = compare(&[1.5, f32::INFINITY], &[1.0, 2.0], Tolerance::Approximate);
        assert!(!p.ok && p.has_non_finite() && p.max_abs == 0.5, "{p:?}");
        assert!(!compare(&[1.0], &[1.0], Tolerance::Exact).has_non_finite());
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
