//! A seeded validation split held out of the training split.
//!
//! Choices (epochs, loss weights, curriculum) are made on the validation images; the test
//! split is kept for the one reported table. The hold-out is stratified: each class gives
//! the same share of its images (rounded so the total is exactly the number asked for), and
//! which images go is a function of the seed only, so every method and every seed of a
//! comparison trains on the same images and is validated on the same others.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::{DataError, Dataset, Splits};

/// The `validation` setting of a config: how many training images to hold out, and the seed
/// that picks them (independent of the training seed, so the split stays fixed across seeds).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ValidationSplit {
    /// Images held out of the training split.
    pub images: usize,
    /// Seed of the selection.
    #[serde(default)]
    pub seed: u64,
}

/// The training split without the validation images, the validation images, and the test
/// split as loaded. The indices are positions in the loaded training split.
#[derive(Clone, Debug)]
pub struct HeldOut {
    /// Training images left for training (and the retrieval database).
    pub train: Dataset,
    /// The held-out validation images.
    pub validation: Dataset,
    /// The untouched test split.
    pub test: Dataset,
    /// Indices (into the loaded training split) of the images kept for training, ascending.
    pub train_indices: Vec<usize>,
    /// Indices (into the loaded training split) of the validation images, ascending.
    pub validation_indices: Vec<usize>,
}

impl HeldOut {
    /// What training sees: train without validation, validated on the validation images.
    pub fn for_validation(&self) -> Splits {
        Splits {
            train: self.train.clone(),
            test: self.validation.clone(),
        }
    }

    /// The reported evaluation: the same training images, the test split.
    pub fn for_test(&self) -> Splits {
        Splits {
            train: self.train.clone(),
            test: self.test.clone(),
        }
    }
}

/// What [`hold_out`] appends to the training split's name to name the validation images.
const VALIDATION_SUFFIX: &str = " (validation)";

/// The split `d` is, for per-epoch logs: `validation` for the images [`hold_out`] held out,
/// else `test`.
pub fn split_label(d: &Dataset) -> &'static str {
    if d.name.ends_with(VALIDATION_SUFFIX) {
        "validation"
    } else {
        "test"
    }
}

/// Holds `split.images` images of `splits.train` out as a stratified validation set.
///
/// Errors when the number is zero or leaves a class without training images.
pub fn hold_out(splits: &Splits, split: &ValidationSplit) -> Result<HeldOut, DataError> {
    let train = &splits.train;
    let invalid = |message: String| DataError::Invalid {
        path: "validation.images".into(),
        message,
    };
    if split.images == 0 || split.images >= train.len() {
        return Err(invalid(format!(
            "{} images: expected between 1 and {} (the training split has {})",
            split.images,
            train.len().saturating_sub(1),
            train.len()
        )));
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); train.classes.len()];
    for (i, &l) in train.labels.iter().enumerate() {
        by_class[usize::from(l)].push(i);
    }
    // Largest-remainder apportionment of `images` over the classes, by class size.
    let total = train.len();
    let mut quota: Vec<(usize, usize, usize)> = by_class
        .iter()
        .enumerate()
        .map(|(c, members)| {
            let exact = members.len() * split.images;
            (c, exact / total, exact % total)
        })
        .collect();
    let mut given: usize = quota.iter().map(|q| q.1).sum();
    let mut order: Vec<usize> = (0..quota.len()).collect();
    order.sort_by(|&a, &b| quota[b].2.cmp(&quota[a].2).then(a.cmp(&b)));
    for &c in order.iter().cycle().take(2 * quota.len()) {
        if given == split.images {
            break;
        }
        if quota[c].1 < by_class[c].len() {
            quota[c].1 += 1;
            given += 1;
        }
    }
    let mut rng = StdRng::seed_from_u64(split.seed ^ 0x7661_6c69_6461_7465);
    let mut validation_indices = Vec::with_capacity(split.images);
    for (c, members) in by_class.iter_mut().enumerate() {
        let take = quota[c].1;
        if !members.is_empty() && take >= members.len() {
            return Err(invalid(format!(
                "{} images leave class '{}' without training images; expected fewer",
                split.images, train.classes[c]
            )));
        }
        members.shuffle(&mut rng);
        validation_indices.extend_from_slice(&members[..take]);
    }
    validation_indices.sort_unstable();
    let mut held = vec![false; train.len()];
    for &i in &validation_indices {
        held[i] = true;
    }
    let train_indices: Vec<usize> = (0..train.len()).filter(|&i| !held[i]).collect();
    let mut validation = train.subset(&validation_indices);
    validation.name = format!("{}{VALIDATION_SUFFIX}", train.name);
    Ok(HeldOut {
        train: train.subset(&train_indices),
        validation,
        test: splits.test.clone(),
        train_indices,
        validation_indices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageShape;

    fn set(labels: Vec<u16>, classes: usize) -> Dataset {
        let shape = ImageShape::new(1, 2, 2);
        Dataset {
            name: "t".into(),
            shape,
            images: (0..labels.len() * 4).map(|i| (i % 251) as u8).collect(),
            labels,
            classes: (0..classes).map(|c| c.to_string()).collect(),
        }
    }

    fn splits() -> Splits {
        // 3 classes of 50, 30 and 20 images.
        let labels: Vec<u16> = (0..100)
            .map(|i| {
                if i < 50 {
                    0
                } else if i < 80 {
                    1
                } else {
                    2
                }
            })
            .collect();
        Splits {
            train: set(labels, 3),
            test: set(vec![0, 1, 2], 3),
        }
    }

    #[test]
    fn the_split_is_disjoint_exact_stratified_and_seeded() {
        let s = splits();
        let h = hold_out(
            &s,
            &ValidationSplit {
                images: 10,
                seed: 3,
            },
        )
        .unwrap();
        assert_eq!(h.validation.len(), 10);
        assert_eq!(h.train.len(), 90);
        // Per-epoch logs name the split they measure on.
        assert_eq!(split_label(&h.validation), "validation");
        assert_eq!(split_label(&h.test), "test");
        let mut all: Vec<usize> = h
            .train_indices
            .iter()
            .chain(&h.validation_indices)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..100).collect::<Vec<_>>(),
            "a partition of the training split"
        );
        assert_eq!(h.validation.class_counts(), [5, 3, 2]);
        // The pixels travel with the indices.
        for (k, &i) in h.validation_indices.iter().enumerate() {
            assert_eq!(h.validation.image(k), s.train.image(i));
        }
        // The test split is untouched.
        assert_eq!(h.test.labels, s.test.labels);
        let again = hold_out(
            &s,
            &ValidationSplit {
                images: 10,
                seed: 3,
            },
        )
        .unwrap();
        assert_eq!(again.validation_indices, h.validation_indices);
        let other = hold_out(
            &s,
            &ValidationSplit {
                images: 10,
                seed: 4,
            },
        )
        .unwrap();
        assert_ne!(other.validation_indices, h.validation_indices);
    }

    #[test]
    fn rounding_still_gives_the_exact_count() {
        let s = splits();
        for n in [1, 7, 33, 97] {
            let h = hold_out(&s, &ValidationSplit { images: n, seed: 0 }).unwrap();
            assert_eq!(h.validation.len(), n, "{n}");
        }
    }

    #[test]
    fn bad_sizes_are_refused_with_the_field() {
        let s = splits();
        for n in [0, 100, 1000] {
            let e = hold_out(&s, &ValidationSplit { images: n, seed: 0 })
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("validation.images") && e.contains("between 1 and 99"),
                "{e}"
            );
        }
    }
}
