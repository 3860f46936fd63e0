//! Paired comparison of two methods run with the same seeds.
//!
//! Every seed gives both methods the same initial weights draw, data order and augmentation,
//! so the per-seed differences are the honest unit: their mean, a two-sided 95 % confidence
//! interval from Student's t with n - 1 degrees of freedom, and how many seeds favour each
//! method. With fewer than two seeds there is no interval.

use serde::Serialize;

/// The paired difference `a - b` over seeds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairedDifference {
    /// Seeds compared.
    pub n: usize,
    /// Mean of `a_i - b_i`.
    pub mean: f64,
    /// Sample standard deviation of the differences (0 when n < 2).
    pub std: f64,
    /// Lower end of the 95 % confidence interval of the mean (None when n < 2).
    pub ci_low: Option<f64>,
    /// Upper end of the 95 % confidence interval of the mean (None when n < 2).
    pub ci_high: Option<f64>,
    /// Seeds where `a > b`.
    pub a_better: usize,
    /// Seeds where `b > a`.
    pub b_better: usize,
    /// Seeds where they are equal.
    pub ties: usize,
}

impl PairedDifference {
    /// Whether the 95 % interval excludes zero (a difference the seeds support).
    pub fn excludes_zero(&self) -> bool {
        matches!((self.ci_low, self.ci_high), (Some(lo), Some(hi)) if lo > 0.0 || hi < 0.0)
    }
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (two-sided 95 %).
///
/// Exact table values for 1..=30 (rounded to 3 decimals, as printed in statistics tables),
/// then 40, 60, 120 and the normal limit, interpolated linearly in 1/df between them.
pub fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    const TAIL: [(f64, f64); 4] = [(30.0, 2.042), (40.0, 2.021), (60.0, 2.000), (120.0, 1.980)];
    assert!(df >= 1, "t quantile needs at least one degree of freedom");
    if df <= 30 {
        return TABLE[df - 1];
    }
    let x = 1.0 / df as f64;
    for w in TAIL.windows(2) {
        let ((d0, t0), (d1, t1)) = (w[0], w[1]);
        if (df as f64) <= d1 {
            let (x0, x1) = (1.0 / d0, 1.0 / d1);
            return t0 + (t1 - t0) * (x - x0) / (x1 - x0);
        }
    }
    // Between 120 and infinity (1/df -> 0, t -> 1.960).
    let (x0, t0) = (1.0 / 120.0, 1.980);
    1.960 + (t0 - 1.960) * x / x0
}

/// The paired difference of `a` and `b` (same length, index = seed).
///
/// # Panics
/// If the lengths differ or are zero.
pub fn paired(a: &[f64], b: &[f64]) -> PairedDifference {
    assert_eq!(
        a.len(),
        b.len(),
        "paired values need one value per seed on both sides"
    );
    assert!(!a.is_empty(), "paired values need at least one seed");
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    let mean = d.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    let (ci_low, ci_high) = if n > 1 {
        let half = t975(n - 1) * std / (n as f64).sqrt();
        (Some(mean - half), Some(mean + half))
    } else {
        (None, None)
    };
    PairedDifference {
        n,
        mean,
        std,
        ci_low,
        ci_high,
        a_better: d.iter().filter(|&&v| v > 0.0).count(),
        b_better: d.iter().filter(|&&v| v < 0.0).count(),
        ties: d.iter().filter(|&&v| v == 0.0).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_hand_computation() {
        // a - b = [0.02, 0.01, -0.01, 0.03, 0.00]
        let a = [0.82, 0.81, 0.79, 0.83, 0.80];
        let b = [0.80, 0.80, 0.80, 0.80, 0.80];
        let p = paired(&a, &b);
        // mean = 0.05 / 5 = 0.01
        assert!((p.mean - 0.01).abs() < 1e-12, "{p:?}");
        // squared deviations: 1e-4, 0, 4e-4, 4e-4, 1e-4 -> sum 1e-3; var = 1e-3 / 4 = 2.5e-4
        let std = 2.5e-4f64.sqrt();
        assert!((p.std - std).abs() < 1e-12, "{p:?}");
        // half width = t(0.975, 4) * std / sqrt(5) = 2.776 * 0.0158114 / 2.2360680 = 0.0196293
        let half = 2.776 * std / 5f64.sqrt();
        assert!((half - 0.019_629_3).abs() < 1e-6);
        assert!((p.ci_low.unwrap() - (0.01 - half)).abs() < 1e-12);
        assert!((p.ci_high.unwrap() - (0.01 + half)).abs() < 1e-12);
        assert_eq!((p.a_better, p.b_better, p.ties), (3, 1, 1));
        assert!(
            !p.excludes_zero(),
            "the interval [-0.0096, 0.0296] contains 0"
        );
    }

    #[test]
    fn a_consistent_difference_excludes_zero_and_one_seed_has_no_interval() {
        let p = paired(&[2.0, 3.0, 4.0], &[1.0, 2.1, 2.9]);
        assert!(p.excludes_zero(), "{p:?}");
        let one = paired(&[1.0], &[0.5]);
        assert_eq!((one.ci_low, one.ci_high), (None, None));
        assert!(!one.excludes_zero());
    }

    #[test]
    fn t_quantiles_follow_the_table_and_approach_the_normal() {
        assert_eq!(t975(1), 12.706);
        assert_eq!(t975(4), 2.776);
        assert_eq!(t975(30), 2.042);
        assert!((t975(60) - 2.000).abs() < 1e-12);
        assert!(t975(45) < 2.021 && t975(45) > 2.000);
        assert!(t975(10_000) > 1.960 && t975(10_000) < 1.961);
        let mut last = f64::INFINITY;
        for df in 1..500 {
            assert!(t975(df) <= last, "monotone at {df}");
            last = t975(df);
        }
    }
}
