//! Summary statistics of repeated latency measurements.

/// The statistics type shared with the on-device runner (one definition, one percentile rule).
pub use distill_edge_schema::LatencyStats;

/// A terminal table of latency rows: (name, batch, statistics); `first` heads the name column
/// (`engine` on the host, `model` on a device).
///
/// A percentile the run count cannot support (see `LatencyStats::unsupported`) is marked `*`,
/// with a footnote under the table.
pub fn latency_table(first: &str, rows: &[(String, usize, LatencyStats)]) -> String {
    let mut t = crate::table::Table::new([
        first, "batch", "runs", "min ms", "mean ms", "std ms", "p50 ms", "p90 ms", "p95 ms",
        "p99 ms", "max ms",
    ]);
    let mut marked = false;
    for (name, batch, s) in rows {
        let mut tail = |p: &str, v: f64| {
            if s.unsupported.iter().any(|u| u == p) {
                marked = true;
                format!("{v:.3}*")
            } else {
                format!("{v:.3}")
            }
        };
        let (p90, p95, p99) = (
            tail("p90", s.p90_ms),
            tail("p95", s.p95_ms),
            tail("p99", s.p99_ms),
        );
        t.row([
            name.clone(),
            batch.to_string(),
            s.runs.to_string(),
            format!("{:.3}", s.min_ms),
            format!("{:.3}", s.mean_ms),
            format!("{:.3}", s.std_ms),
            format!("{:.3}", s.p50_ms),
            p90,
            p95,
            p99,
            format!("{:.3}", s.max_ms),
        ]);
    }
    let mut out = t.render();
    if marked {
        out.push_str(&format!(
            "* fewer than {} runs above this percentile: the run count cannot support it (p99 needs 1000 runs)\n",
            distill_edge_schema::TAIL_SAMPLES
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_non_finite_only_give_none() {
        assert_eq!(LatencyStats::from_samples(&[]), None);
        assert_eq!(LatencyStats::from_samples(&[f64::NAN, f64::INFINITY]), None);
    }

    #[test]
    fn unsupported_percentiles_are_starred_with_a_footnote() {
        let few = LatencyStats::from_samples(&[1.0, 2.0, 3.0]).unwrap();
        let text = latency_table("engine", &[("tract".into(), 1, few)]);
        assert!(text.contains("3.000*"), "{text}");
        assert!(text.contains("cannot support"), "{text}");
        let many: Vec<f64> = (1..=1000).map(f64::from).collect();
        let text = latency_table(
            "engine",
            &[(
                "tract".into(),
                1,
                LatencyStats::from_samples(&many).unwrap(),
            )],
        );
        assert!(!text.contains('*'), "{text}");
    }

    #[test]
    fn single_sample() {
        let s = LatencyStats::from_samples(&[3.5]).unwrap();
        assert_eq!(s.runs, 1);
        for v in [s.min_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.mean_ms] {
            assert_eq!(v, 3.5);
        }
    }

    #[test]
    fn ten_samples_nearest_rank() {
        // Shuffled 1..=10: p50 = s[ceil(5)-1] = 5, p90 = s[ceil(9)-1] = 9,
        // p99 = s[ceil(9.9)-1] = 10, mean = 5.5.
        let samples = [7.0, 1.0, 10.0, 3.0, 5.0, 2.0, 9.0, 4.0, 8.0, 6.0];
        let s = LatencyStats::from_samples(&samples).unwrap();
        assert_eq!(
            s,
            LatencyStats {
                runs: 10,
                min_ms: 1.0,
                p50_ms: 5.0,
                p90_ms: 9.0,
                p99_ms: 10.0,
                max_ms: 10.0,
                mean_ms: 5.5,
                p95_ms: 10.0,
                std_ms: (55.0f64 / 6.0).sqrt(),
                unsupported: vec!["p90".into(), "p95".into(), "p99".into()],
            }
        );
    }

    #[test]
    fn hundred_samples_and_ignored_nan() {
        // 1..=100 plus a NaN: p50 = 50, p90 = 90, p99 = 99 (rank ceil(99) = 99).
        let mut samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        samples.push(f64::NAN);
        let s = LatencyStats::from_samples(&samples).unwrap();
        assert_eq!(s.runs, 100);
        assert_eq!((s.min_ms, s.max_ms), (1.0, 100.0));
        assert_eq!((s.p50_ms, s.p90_ms, s.p99_ms), (50.0, 90.0, 99.0));
        assert!((s.mean_ms - 50.5).abs() < 1e-12);
    }

    #[test]
    fn three_samples_round_rank_up() {
        // n = 3: p50 rank ceil(1.5) = 2, p90 rank ceil(2.7) = 3.
        let s = LatencyStats::from_samples(&[30.0, 10.0, 20.0]).unwrap();
        assert_eq!((s.p50_ms, s.p90_ms, s.p99_ms), (20.0, 30.0, 30.0));
        assert_eq!(s.mean_ms, 20.0);
    }
}
