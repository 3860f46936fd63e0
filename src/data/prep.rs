//! Batching: epoch orders, index batches, normalisation and augmentation into
//! `f32` buffers laid out `[B, C, H, W]`.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::Dataset;
use super::synthetic::mix_seed;

/// Per-channel mean and standard deviation of pixel values scaled to `[0, 1]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    /// Mean of each channel.
    pub mean: Vec<f32>,
    /// Standard deviation of each channel (never 0 when built by this module).
    pub std: Vec<f32>,
}

impl Normalization {
    /// Per-channel mean and population standard deviation of `ds`, computed
    /// exactly (integer histograms, then `f64`). A channel whose std is below
    /// `1e-6` (constant, or an empty set) gets std 1 so that normalising never
    /// divides by zero; an empty set gives mean 0.
    pub fn from_dataset(ds: &Dataset) -> Self {
        let c = ds.shape.channels;
        let plane = ds.shape.plane();
        let mut hist = vec![[0u64; 256]; c];
        if plane > 0 {
            for img in ds.images.chunks_exact(c * plane) {
                for (h, ch) in hist.iter_mut().zip(img.chunks_exact(plane)) {
                    for &p in ch {
                        h[usize::from(p)] += 1;
                    }
                }
            }
        }
        let (mut mean, mut std) = (Vec::with_capacity(c), Vec::with_capacity(c));
        for h in &hist {
            let n: u64 = h.iter().sum();
            if n == 0 {
                mean.push(0.0);
                std.push(1.0);
                continue;
            }
            let n = n as f64;
            let m = h
                .iter()
                .enumerate()
                .map(|(v, &k)| v as f64 * k as f64)
                .sum::<f64>()
                / n;
            let var = h
                .iter()
                .enumerate()
                .map(|(v, &k)| (v as f64 - m).powi(2) * k as f64)
                .sum::<f64>()
                / n;
            let s = var.sqrt() / 255.0;
            mean.push((m / 255.0) as f32);
            std.push(if s < 1e-6 { 1.0 } else { s as f32 });
        }
        Self { mean, std }
    }

    /// Mean 0 and std 1 for each of `channels`: batches hold `pixel / 255`.
    pub fn identity(channels: usize) -> Self {
        Self {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Number of channels described.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Per channel, the 256 normalised values of the pixel values 0..=255.
    fn lookup(&self) -> Vec<[f32; 256]> {
        self.mean
            .iter()
            .zip(&self.std)
            .map(|(&m, &s)| {
                let (m, inv) = (f64::from(m), 1.0 / f64::from(s));
                std::array::from_fn(|v| ((v as f64 / 255.0 - m) * inv) as f32)
            })
            .collect()
    }
}

/// Random training-time augmentation, the `[train.augment]`-style config section.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Augment {
    /// Pad each side by this many pixels, then crop back to the original size
    /// at a random offset (0 = no crop).
    #[serde(default)]
    pub crop_padding: usize,
    /// Flip horizontally with probability 0.5.
    #[serde(default)]
    pub hflip: bool,
}

impl Augment {
    /// Checks the augmentation against the images it will see: a crop padding must be smaller
    /// than the image height and width (a larger one crops mostly or only padding).
    pub fn validate(&self, height: usize, width: usize) -> Result<(), String> {
        let side = height.min(width);
        if self.crop_padding > 0 && self.crop_padding >= side {
            return Err(format!(
                "crop-padding {} must be smaller than the {height}x{width} images",
                self.crop_padding
            ));
        }
        Ok(())
    }
}

/// A deterministic permutation of `0..n` for (`seed`, `epoch`): the same
/// inputs give the same order on any machine (StdRng of rand 0.9 seeded with
/// a SplitMix64 mix of both).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = StdRng::seed_from_u64(mix_seed(seed, epoch as u64));
    order.shuffle(&mut rng);
    order
}

/// Index batches of `batch_size` over `order`, in order; the last partial batch
/// is kept unless `drop_last`.
///
/// # Panics
/// If `batch_size` is 0.
pub fn batches(
    order: &[usize],
    batch_size: usize,
    drop_last: bool,
) -> impl Iterator<Item = &[usize]> {
    assert!(batch_size > 0, "batch_size must be at least 1");
    order
        .chunks(batch_size)
        .filter(move |b| !drop_last || b.len() == batch_size)
}

/// Fills `out` (cleared first; its allocation is reused) with the images of
/// `ds` at `indices` as `f32` `[B, C, H, W]`, each value `(pixel / 255 - mean[c]) / std[c]`.
///
/// With `augment`, each image in turn draws from one RNG seeded by `aug_seed`
/// (so the same seed and indices give the same batch): first, when
/// `crop_padding = p > 0`, offsets `dx, dy` uniform in `0..=2p`, and the image
/// is padded by `p` pixels of raw value 0 (black, as torchvision's RandomCrop
/// does; after normalisation that is `-mean/std`) and cropped back to `H x W`
/// at `(dx, dy)`, i.e. output `(y, x)` = input `(y + dy - p, x + dx - p)`;
/// then, when `hflip`, a fair coin decides whether each row is reversed.
///
/// # Panics
/// If an index is out of range or `norm` does not have `ds.shape.channels` channels.
pub fn fill_batch(
    ds: &Dataset,
    indices: &[usize],
    norm: &Normalization,
    augment: Option<(&Augment, u64)>,
    out: &mut Vec<f32>,
) {
    let shape = ds.shape;
    assert_eq!(
        norm.channels(),
        shape.channels,
        "normalisation has {} channels but {} images are {}",
        norm.channels(),
        ds.name,
        shape
    );
    let len = shape.len();
    let (h, w, plane) = (shape.height, shape.width, shape.plane());
    let lut = norm.lookup();
    out.clear();
    out.resize(indices.len() * len, 0.0);
    if len == 0 {
        return;
    }

    let Some((aug, seed)) = augment.filter(|(a, _)| a.crop_padding > 0 || a.hflip) else {
        for (dst, &i) in out.chunks_exact_mut(len).zip(indices) {
            let src = ds.image(i);
            for ((d, s), table) in dst
                .chunks_exact_mut(plane)
                .zip(src.chunks_exact(plane))
                .zip(&lut)
            {
                for (d, &p) in d.iter_mut().zip(s) {
                    *d = table[usize::from(p)];
                }
            }
        }
        return;
    };

    let mut rng = StdRng::seed_from_u64(seed);
    let p = aug.crop_padding as isize;
    for (dst, &i) in out.chunks_exact_mut(len).zip(indices) {
        let src = ds.image(i);
        let (dx, dy) = if p > 0 {
            // u64 rather than isize: rand samples only fixed-width integers portably.
            let span = 2 * p as u64;
            (
                rng.random_range(0..=span) as isize,
                rng.random_range(0..=span) as isize,
            )
        } else {
            (0, 0)
        };
        let flip = aug.hflip && rng.random::<bool>();
        // Output column x reads source column x + shift (before flipping).
        let (sx, sy) = (dx - p, dy - p);
        // Output columns whose source column lies inside the image.
        let x_lo = (-sx).clamp(0, w as isize) as usize;
        let x_hi = (w as isize - sx).clamp(0, w as isize) as usize;
        for ((d, s), table) in dst
            .chunks_exact_mut(plane)
            .zip(src.chunks_exact(plane))
            .zip(&lut)
        {
            let pad = table[0];
            for (y, row) in d.chunks_exact_mut(w).enumerate() {
                let src_y = y as isize + sy;
                if src_y < 0 || src_y >= h as isize || x_lo >= x_hi {
                    row.fill(pad);
                    continue;
                }
                let srow = &s[src_y as usize * w..][..w];
                row[..x_lo].fill(pad);
                row[x_hi..].fill(pad);
                let from = (x_lo as isize + sx) as usize;
                for (d, &v) in row[x_lo..x_hi].iter_mut().zip(&srow[from..]) {
                    *d = table[usize::from(v)];
                }
                if flip {
                    row.reverse();
                }
            }
        }
    }
}

/// Fills `out` (cleared first) with the labels of `ds` at `indices`, as `i64`
/// (the element type of integer tensors).
///
/// # Panics
/// If an index is out of range.
pub fn fill_labels(ds: &Dataset, indices: &[usize], out: &mut Vec<i64>) {
    out.clear();
    out.extend(indices.iter().map(|&i| i64::from(ds.labels[i])));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageShape;

    fn ds(shape: ImageShape, images: Vec<u8>) -> Dataset {
        let n = images.len() / shape.len();
        Dataset {
            name: "hand".into(),
            shape,
            images,
            labels: (0..n as u16).map(|i| i % 2).collect(),
            classes: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn crop_padding_is_bounded_by_the_image_size() {
        let a = |p| Augment {
            crop_padding: p,
            hflip: false,
        };
        assert!(a(0).validate(28, 28).is_ok());
        assert!(a(4).validate(28, 28).is_ok());
        let e = a(1000).validate(28, 28).unwrap_err();
        assert!(
            e.contains("crop-padding 1000") && e.contains("28x28"),
            "{e}"
        );
        assert!(a(16).validate(32, 16).is_err());
    }

    #[test]
    fn epoch_order_is_deterministic_permutation() {
        for n in [0, 1, 2, 17, 1000] {
            let a = epoch_order(n, 42, 3);
            assert_eq!(a, epoch_order(n, 42, 3));
            let mut sorted = a.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>());
        }
        assert_ne!(epoch_order(1000, 42, 3), epoch_order(1000, 42, 4));
        assert_ne!(epoch_order(1000, 42, 3), epoch_order(1000, 43, 3));
        assert_ne!(epoch_order(1000, 42, 3), (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn batches_keep_or_drop_last() {
        let order: Vec<usize> = (0..10).collect();
        let b: Vec<&[usize]> = batches(&order, 4, false).collect();
        assert_eq!(b, vec![&[0, 1, 2, 3][..], &[4, 5, 6, 7], &[8, 9]]);
        let b: Vec<&[usize]> = batches(&order, 4, true).collect();
        assert_eq!(b, vec![&[0, 1, 2, 3][..], &[4, 5, 6, 7]]);
        assert_eq!(batches(&order, 5, true).count(), 2);
        assert_eq!(batches(&[], 3, false).count(), 0);
    }

    #[test]
    fn normalization_from_hand_made_set() {
        // 2 images of 2x1x2: channel 0 holds 0, 255, 0, 255; channel 1 holds 51 everywhere.
        let d = ds(
            ImageShape::new(2, 1, 2),
            vec![0, 255, 51, 51, 255, 0, 51, 51],
        );
        let n = Normalization::from_dataset(&d);
        assert_eq!(n.mean.len(), 2);
        assert!((n.mean[0] - 0.5).abs() < 1e-7, "{n:?}");
        assert!((n.std[0] - 0.5).abs() < 1e-7, "{n:?}");
        assert!((n.mean[1] - 0.2).abs() < 1e-7, "{n:?}");
        assert_eq!(n.std[1], 1.0, "constant channel gets std 1");

        // 1 channel: values 0, 51, 102, 153 -> /255: 0, .2, .4, .6; mean .3, var .05
        let d = ds(ImageShape::new(1, 2, 2), vec![0, 51, 102, 153]);
        let n = Normalization::from_dataset(&d);
        assert!((n.mean[0] - 0.3).abs() < 1e-7);
        assert!((n.std[0] - 0.05f32.sqrt()).abs() < 1e-7);

        let empty = ds(ImageShape::new(3, 2, 2), vec![]);
        assert_eq!(
            Normalization::from_dataset(&empty),
            Normalization::identity(3)
        );
    }

    #[test]
    fn fill_batch_normalises() {
        let d = ds(
            ImageShape::new(2, 1, 2),
            vec![0, 255, 51, 102, 10, 20, 30, 40],
        );
        let norm = Normalization {
            mean: vec![0.5, 0.1],
            std: vec![0.25, 2.0],
        };
        let mut out = vec![9.0; 3];
        fill_batch(&d, &[1, 0], &norm, None, &mut out);
        let f = |p: f32, c: usize| (p / 255.0 - norm.mean[c]) / norm.std[c];
        let want = [
            f(10.0, 0),
            f(20.0, 0),
            f(30.0, 1),
            f(40.0, 1),
            f(0.0, 0),
            f(255.0, 0),
            f(51.0, 1),
            f(102.0, 1),
        ];
        assert_eq!(out.len(), 8);
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?} vs {want:?}");
        }
        assert_eq!(out[4], -2.0);
        assert_eq!(out[5], 2.0);

        fill_batch(&d, &[0], &Normalization::identity(2), None, &mut out);
        assert_eq!(out, vec![0.0, 1.0, 0.2, 0.4]);
        // augmentation that does nothing equals no augmentation
        let mut out2 = Vec::new();
        fill_batch(
            &d,
            &[0],
            &Normalization::identity(2),
            Some((&Augment::default(), 5)),
            &mut out2,
        );
        assert_eq!(out, out2);
    }

    #[test]
    fn hflip_reverses_rows() {
        // 1x2x3 image
        let d = ds(ImageShape::new(1, 2, 3), vec![1, 2, 3, 4, 5, 6]);
        let aug = Augment {
            crop_padding: 0,
            hflip: true,
        };
        let id = Normalization::identity(1);
        let plain: Vec<f32> = [1, 2, 3, 4, 5, 6]
            .iter()
            .map(|&v| v as f32 / 255.0)
            .collect();
        let flipped: Vec<f32> = [3, 2, 1, 6, 5, 4]
            .iter()
            .map(|&v| v as f32 / 255.0)
            .collect();
        let (mut seen_plain, mut seen_flip) = (0, 0);
        let mut out = Vec::new();
        for seed in 0..64 {
            fill_batch(&d, &[0], &id, Some((&aug, seed)), &mut out);
            if out == plain {
                seen_plain += 1;
            } else {
                assert_eq!(out, flipped);
                seen_flip += 1;
            }
            let mut again = Vec::new();
            fill_batch(&d, &[0], &id, Some((&aug, seed)), &mut again);
            assert_eq!(out, again, "same seed, same batch");
        }
        assert!(
            seen_plain > 10 && seen_flip > 10,
            "{seen_plain} {seen_flip}"
        );
    }

    /// Reference crop (+ optional flip) of one channel plane, raw values.
    fn reference(src: &[u8], w: usize, h: usize, sx: isize, sy: isize, flip: bool) -> Vec<u8> {
        let mut out = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                let cx = if flip { w - 1 - x } else { x };
                let (ix, iy) = (cx as isize + sx, y as isize + sy);
                if (0..w as isize).contains(&ix) && (0..h as isize).contains(&iy) {
                    out[y * w + x] = src[iy as usize * w + ix as usize];
                }
            }
        }
        out
    }

    #[test]
    fn crop_shifts_with_zero_padding() {
        let (w, h) = (4, 3);
        let img: Vec<u8> = (1..=12).collect();
        let d = ds(ImageShape::new(1, h, w), img.clone());
        let id = Normalization::identity(1);
        for hflip in [false, true] {
            let aug = Augment {
                crop_padding: 2,
                hflip,
            };
            let mut shifts = std::collections::HashSet::new();
            let mut out = Vec::new();
            for seed in 0..300 {
                fill_batch(&d, &[0], &id, Some((&aug, seed)), &mut out);
                let raw: Vec<u8> = out.iter().map(|v| (v * 255.0).round() as u8).collect();
                let found = (-2..=2)
                    .flat_map(|sx| (-2..=2).map(move |sy| (sx, sy)))
                    .flat_map(|(sx, sy)| [(sx, sy, false), (sx, sy, true)])
                    .filter(|&(_, _, f)| hflip || !f)
                    .find(|&(sx, sy, f)| reference(&img, w, h, sx, sy, f) == raw);
                let (sx, sy, _) = found.unwrap_or_else(|| panic!("seed {seed}: {raw:?}"));
                shifts.insert((sx, sy));
            }
            assert_eq!(shifts.len(), 25, "every offset in 0..=2p occurs");
        }
    }

    #[test]
    fn crop_pads_with_normalised_black_per_channel() {
        let d = ds(ImageShape::new(2, 8, 8), vec![200; 128]);
        let norm = Normalization {
            mean: vec![0.5, 0.25],
            std: vec![0.5, 0.25],
        };
        let aug = Augment {
            crop_padding: 100,
            hflip: false,
        };
        let mut out = Vec::new();
        fill_batch(&d, &[0, 0], &norm, Some((&aug, 1)), &mut out);
        // Raw 0 normalises to -1 in both channels; 200 to these values.
        let inside = [(200.0 / 255.0 - 0.5) / 0.5, (200.0 / 255.0 - 0.25) / 0.25];
        for (k, v) in out.iter().enumerate() {
            let c = (k / 64) % 2;
            assert!(*v == -1.0 || (v - inside[c]).abs() < 1e-6, "{k}: {v}");
        }
        assert!(out.iter().filter(|&&v| v == -1.0).count() > 64);
    }

    #[test]
    fn augmented_batches_differ_between_images_but_repeat_per_seed() {
        let d = ds(ImageShape::new(1, 5, 5), (0..25).collect());
        let aug = Augment {
            crop_padding: 1,
            hflip: true,
        };
        let id = Normalization::identity(1);
        let idx = vec![0; 16];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        fill_batch(&d, &idx, &id, Some((&aug, 9)), &mut a);
        fill_batch(&d, &idx, &id, Some((&aug, 9)), &mut b);
        assert_eq!(a, b);
        let distinct: std::collections::HashSet<Vec<u32>> = a
            .chunks(25)
            .map(|c| c.iter().map(|v| v.to_bits()).collect())
            .collect();
        assert!(distinct.len() > 4);
    }

    #[test]
    fn labels_of_batch() {
        let d = ds(ImageShape::new(1, 1, 1), vec![0, 1, 2]);
        let mut out = vec![7];
        fill_labels(&d, &[2, 1, 0], &mut out);
        assert_eq!(out, vec![0, 1, 0]);
    }

    #[test]
    fn augment_config() {
        let a: Augment = toml::from_str("crop-padding = 4\nhflip = true\n").unwrap();
        assert_eq!(
            a,
            Augment {
                crop_padding: 4,
                hflip: true
            }
        );
        assert_eq!(toml::from_str::<Augment>("").unwrap(), Augment::default());
        assert!(toml::from_str::<Augment>("flip = true").is_err());
    }
}
