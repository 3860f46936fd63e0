//! The int8 quantization settings (`[export]` of a pipeline config, and the flags of
//! `distill-edge export`). Plain data: the quantizers live in `onnx::qop`, `onnx::qdq` and
//! `onnx::calib`.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The form of the int8 graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Int8Form {
    /// Integer operators (QLinearConv, MatMulInteger): integer kernels in tract and ONNX
    /// Runtime.
    #[default]
    Qoperator,
    /// Quantize/DequantizeLinear pairs around float Conv and MatMul (ONNX Runtime's QDQ
    /// layout; tract runs it in float).
    Qdq,
}

impl Int8Form {
    /// The name used in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Int8Form::Qoperator => "qoperator",
            Int8Form::Qdq => "qdq",
        }
    }
}

/// How activation ranges are chosen from the calibration values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibrationKind {
    /// The observed minimum and maximum.
    MinMax,
    /// The `percentile`-th and `(100 - percentile)`-th percentiles.
    Percentile,
    /// The clipped range with the smallest mean squared quantization error.
    #[default]
    Mse,
}

/// A resolved calibration method.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "method")]
pub enum Calibration {
    /// Observed (min, max).
    MinMax,
    /// Percentiles `100 - percentile` and `percentile`.
    Percentile {
        /// In (50, 100].
        percentile: f64,
    },
    /// Smallest mean squared error of the fake-quantized values.
    Mse,
}

impl Calibration {
    /// From the config's `calibration` and `percentile`.
    pub fn new(kind: CalibrationKind, percentile: f64) -> Self {
        match kind {
            CalibrationKind::MinMax => Calibration::MinMax,
            CalibrationKind::Percentile => Calibration::Percentile { percentile },
            CalibrationKind::Mse => Calibration::Mse,
        }
    }
}

/// The default percentile.
pub fn default_percentile() -> f64 {
    99.99
}

/// The default number of held-out training images for the accuracy-aware search.
pub fn default_validation_images() -> usize {
    2000
}

/// Checks a percentile (`field` names it in the error).
pub fn validate_percentile(origin: &str, field: &str, p: f64) -> Result<(), ConfigError> {
    if p.is_finite() && p > 50.0 && p <= 100.0 {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            origin: origin.into(),
            field: field.into(),
            message: format!("expected a percentile in (50, 100], got {p}"),
        })
    }
}

/// Checks an accuracy budget in points (`field` names it in the error).
pub fn validate_drop(origin: &str, field: &str, drop: f64) -> Result<(), ConfigError> {
    if drop.is_finite() && (0.0..=100.0).contains(&drop) {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            origin: origin.into(),
            field: field.into(),
            message: format!("expected top-1 points in [0, 100], got {drop}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_validation() {
        assert_eq!(Int8Form::default().name(), "qoperator");
        assert_eq!(
            Calibration::new(CalibrationKind::Percentile, 99.9),
            Calibration::Percentile { percentile: 99.9 }
        );
        assert!(validate_percentile("f", "export.percentile", 99.99).is_ok());
        for bad in [50.0, 100.5, f64::NAN] {
            let e = validate_percentile("f", "export.percentile", bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("export.percentile"), "{e}");
        }
        assert!(validate_drop("f", "d", 1.0).is_ok());
        assert!(validate_drop("f", "d", -1.0).is_err());
    }
}
