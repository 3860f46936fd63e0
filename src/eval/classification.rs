//! Classification metrics: arg-max predictions and a confusion matrix.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Longest class name, in characters, shown in a [`ConfusionMatrix::render`] header; longer names
/// are cut to this length with a trailing `~`.
const MAX_NAME_CHARS: usize = 10;

/// Index of the maximum of each row of a row-major `[n, classes]` matrix.
///
/// Ties go to the first (lowest) index. NaN never wins: NaN entries are skipped, and a row made
/// only of NaN yields 0. `+inf` is an ordinary (largest) value. Returns one index per complete
/// row: an empty vector when `classes == 0`, and a trailing incomplete row (when `values.len()`
/// is not a multiple of `classes`) is ignored.
pub fn argmax_rows(values: &[f32], classes: usize) -> Vec<usize> {
    if classes == 0 {
        return Vec::new();
    }
    values
        .chunks_exact(classes)
        .map(|row| {
            let mut best: Option<(usize, f32)> = None;
            for (i, &v) in row.iter().enumerate() {
                if v.is_nan() {
                    continue;
                }
                // Strictly greater keeps the first index on ties.
                if best.is_none_or(|(_, b)| v > b) {
                    best = Some((i, v));
                }
            }
            best.map_or(0, |(i, _)| i)
        })
        .collect()
}

/// Counts of (true label, predicted class) pairs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    /// Number of classes; `counts` is `classes x classes`.
    pub classes: usize,
    /// `counts[true][predicted]`: number of samples of class `true` predicted as `predicted`.
    pub counts: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    /// Builds the matrix from paired `labels` (true classes) and `predictions`.
    ///
    /// The slices are paired element by element; if their lengths differ the extra elements of
    /// the longer one are ignored. A pair whose label or prediction is `>= classes` is not
    /// counted, so [`ConfusionMatrix::total`] is the number of pairs actually counted.
    pub fn new(labels: &[u16], predictions: &[usize], classes: usize) -> Self {
        let mut counts = vec![vec![0u64; classes]; classes];
        for (&label, &predicted) in labels.iter().zip(predictions) {
            let label = usize::from(label);
            if label < classes && predicted < classes {
                counts[label][predicted] += 1;
            }
        }
        Self { classes, counts }
    }

    /// Number of counted samples (sum of all cells).
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Number of correctly classified samples (sum of the diagonal).
    fn correct(&self) -> u64 {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, row)| row.get(i).copied().unwrap_or(0))
            .sum()
    }

    /// Fraction of samples on the diagonal, in `[0, 1]`; 0 for an empty matrix.
    pub fn accuracy(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            0.0
        } else {
            self.correct() as f64 / total as f64
        }
    }

    /// Recall of each class (`counts[c][c] / sum(counts[c])`), in `[0, 1]`, one entry per row of
    /// `counts`; 0 for a class with no samples.
    pub fn per_class_recall(&self) -> Vec<f64> {
        self.counts
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let support: u64 = row.iter().sum();
                if support == 0 {
                    0.0
                } else {
                    row.get(c).copied().unwrap_or(0) as f64 / support as f64
                }
            })
            .collect()
    }

    /// Plain-text table for a terminal: one row per true class, one column per predicted class,
    /// then each class's recall, followed by a line with the overall accuracy.
    ///
    /// Row and column headers come from `names[c]`, cut to 10 characters (ending in `~` when
    /// cut); a class without a name (when `names` is shorter than `classes`) is shown as its
    /// index.
    pub fn render(&self, names: &[String]) -> String {
        let labels: Vec<String> = (0..self.counts.len())
            .map(|c| match names.get(c) {
                Some(name) => truncate(name, MAX_NAME_CHARS),
                None => c.to_string(),
            })
            .collect();
        let corner = "true\\pred";
        let row_header_width = labels
            .iter()
            .map(|l| l.chars().count())
            .chain([corner.len()])
            .max()
            .unwrap_or(0);
        let max_count = self.counts.iter().flatten().copied().max().unwrap_or(0);
        let cell_width = labels
            .iter()
            .map(|l| l.chars().count())
            .chain([max_count.to_string().len(), 1])
            .max()
            .unwrap_or(1);
        let recall_header = "recall";

        let mut out = String::new();
        // `write!` into a String cannot fail; the results are ignored on purpose.
        let _ = write!(out, "{corner:<row_header_width$}");
        for label in &labels {
            let _ = write!(out, "  {label:>cell_width$}");
        }
        let _ = writeln!(out, "  {recall_header:>7}");
        for ((label, row), recall) in labels.iter().zip(&self.counts).zip(self.per_class_recall()) {
            let _ = write!(out, "{label:<row_header_width$}");
            for count in row {
                let _ = write!(out, "  {count:>cell_width$}");
            }
            let _ = writeln!(out, "  {:>6.2}%", recall * 100.0);
        }
        let _ = writeln!(
            out,
            "accuracy: {:.2}% ({} of {} samples)",
            self.accuracy() * 100.0,
            self.correct(),
            self.total()
        );
        out
    }
}

/// `name` cut to at most `max` characters, the last one replaced by `~` when cut.
fn truncate(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_string()
    } else {
        let mut cut: String = name.chars().take(max.saturating_sub(1)).collect();
        cut.push('~');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_basic_ties_and_nan() {
        let values = [
            0.1,
            0.7,
            0.2, // max at 1
            0.5,
            0.5,
            0.1, // tie: first wins
            f32::NAN,
            0.3,
            0.2, // NaN skipped
            0.2,
            f32::NAN,
            0.9, // NaN in the middle
            f32::NAN,
            f32::NAN,
            f32::NAN, // all NaN: 0
            -1.0,
            f32::INFINITY,
            3.0, // +inf is largest
            -5.0,
            -2.0,
            -2.0, // negatives, tie
        ];
        assert_eq!(argmax_rows(&values, 3), vec![1, 0, 1, 2, 0, 1, 1]);
    }

    #[test]
    fn argmax_degenerate_shapes() {
        assert!(argmax_rows(&[1.0, 2.0], 0).is_empty());
        assert!(argmax_rows(&[], 4).is_empty());
        // Trailing incomplete row ignored.
        assert_eq!(argmax_rows(&[1.0, 2.0, 3.0], 2), vec![1]);
    }

    #[test]
    fn confusion_counts_accuracy_recall() {
        let labels = [0u16, 0, 0, 1, 1, 2, 2, 2];
        let predictions = [0usize, 0, 1, 1, 0, 2, 2, 1];
        let m = ConfusionMatrix::new(&labels, &predictions, 3);
        assert_eq!(m.counts, vec![vec![2, 1, 0], vec![1, 1, 0], vec![0, 1, 2]]);
        assert_eq!(m.total(), 8);
        assert!((m.accuracy() - 5.0 / 8.0).abs() < 1e-12);
        let recall = m.per_class_recall();
        assert_eq!(recall.len(), 3);
        assert!((recall[0] - 2.0 / 3.0).abs() < 1e-12);
        assert!((recall[1] - 0.5).abs() < 1e-12);
        assert!((recall[2] - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn confusion_ignores_out_of_range_and_extra() {
        // Label 5 and prediction 9 are out of range; the extra label has no prediction.
        let m = ConfusionMatrix::new(&[0, 5, 1, 1, 0], &[0, 0, 9, 1], 2);
        assert_eq!(m.counts, vec![vec![1, 0], vec![0, 1]]);
        assert_eq!(m.total(), 2);
        assert_eq!(m.accuracy(), 1.0);
    }

    #[test]
    fn empty_matrix_is_zero_not_nan() {
        let m = ConfusionMatrix::new(&[], &[], 2);
        assert_eq!(m.total(), 0);
        assert_eq!(m.accuracy(), 0.0);
        assert_eq!(m.per_class_recall(), vec![0.0, 0.0]);
        let zero = ConfusionMatrix::new(&[], &[], 0);
        assert_eq!(zero.accuracy(), 0.0);
        assert!(zero.render(&[]).contains("accuracy"));
    }

    #[test]
    fn render_contains_names_counts_and_accuracy() {
        let m = ConfusionMatrix::new(&[0, 0, 1, 2], &[0, 1, 1, 2], 3);
        let names: Vec<String> = ["T-shirt/top", "Trouser", "Pullover"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let text = m.render(&names);
        assert!(text.contains("T-shirt/t~"), "{text}");
        assert!(!text.contains("T-shirt/top"), "{text}");
        assert!(text.contains("Trouser"), "{text}");
        assert!(text.contains("Pullover"), "{text}");
        assert!(text.contains("accuracy: 75.00% (3 of 4 samples)"), "{text}");
        assert!(text.contains("50.00%"), "{text}");
        // Header + 3 rows + accuracy line, all rows of equal width.
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        let width = lines[0].chars().count();
        assert!(
            lines[1..4].iter().all(|l| l.chars().count() == width),
            "{text}"
        );
        // Missing names fall back to the class index.
        let partial = m.render(&names[..1]);
        assert!(
            partial.lines().nth(2).unwrap().starts_with('1'),
            "{partial}"
        );
    }
}
