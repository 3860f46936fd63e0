//! Generated image sets that need nothing installed.
//!
//! Each class is a Gabor patch: a sinusoidal grating whose orientation and
//! spatial frequency are fixed by the class (spread over the plane of
//! orientation x frequency by a low-discrepancy sequence, so any number of
//! classes from 2 to 100 stay apart), under a Gaussian envelope. Every image
//! draws its own phase, envelope position and width, amplitude, small
//! orientation and frequency jitter and additive Gaussian noise. With more than
//! one channel the grating is weighted per channel by a class-dependent colour
//! (weights in -1..=1, so some channels see it inverted).
//!
//! Every image averages about mid-grey whatever its class, so the classes are
//! not separable by mean intensity: a model has to see orientation, frequency
//! and colour, which a small CNN learns within an epoch or two.
//!
//! Each image is generated from its own RNG seeded by (seed, split, index):
//! the same seed gives byte-identical data on any machine, train and test come
//! from different streams, and generation runs in parallel.

use std::f32::consts::PI;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::{DataError, DataSource, Dataset, ImageShape, Splits};

/// Default number of classes.
pub fn default_classes() -> usize {
    10
}
/// Default number of training images.
pub fn default_train() -> usize {
    2000
}
/// Default number of test images.
pub fn default_test() -> usize {
    500
}
/// Default number of channels.
pub fn default_channels() -> usize {
    1
}
/// Default image height and width.
pub fn default_side() -> usize {
    28
}
/// Default seed.
pub fn default_seed() -> u64 {
    1
}
/// Default noise level.
pub fn default_noise() -> f32 {
    0.2
}

/// Largest number of pixel bytes one split may hold (4 GiB).
const MAX_BYTES: usize = 1 << 32;

/// Parameters of a synthetic set (the fields of [`DataSource::Synthetic`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticSpec {
    /// Number of classes, 2..=100.
    pub classes: usize,
    /// Number of training images, >= 1.
    pub train: usize,
    /// Number of test images, >= 1.
    pub test: usize,
    /// Shape of every image: 1..=4 channels, sides 8..=1024.
    pub shape: ImageShape,
    /// Seed; the same seed gives byte-identical data.
    pub seed: u64,
    /// Standard deviation of the additive noise relative to the grating's full
    /// amplitude (finite, >= 0).
    pub noise: f32,
}

impl Default for SyntheticSpec {
    /// 10 classes, 2000 train and 500 test images of 1x28x28, seed 1, noise 0.2.
    fn default() -> Self {
        Self {
            classes: default_classes(),
            train: default_train(),
            test: default_test(),
            shape: ImageShape::new(default_channels(), default_side(), default_side()),
            seed: default_seed(),
            noise: default_noise(),
        }
    }
}

impl From<SyntheticSpec> for DataSource {
    fn from(s: SyntheticSpec) -> Self {
        DataSource::Synthetic {
            classes: s.classes,
            train: s.train,
            test: s.test,
            channels: s.shape.channels,
            height: s.shape.height,
            width: s.shape.width,
            seed: s.seed,
            noise: s.noise,
        }
    }
}

impl TryFrom<&DataSource> for SyntheticSpec {
    type Error = DataError;

    /// The parameters of a [`DataSource::Synthetic`]; an error for other kinds.
    fn try_from(src: &DataSource) -> Result<Self, DataError> {
        match *src {
            DataSource::Synthetic {
                classes,
                train,
                test,
                channels,
                height,
                width,
                seed,
                noise,
            } => Ok(Self {
                classes,
                train,
                test,
                shape: ImageShape::new(channels, height, width),
                seed,
                noise,
            }),
            ref other => Err(config(format!(
                "source of kind '{}' is not synthetic",
                other.name()
            ))),
        }
    }
}

fn config(message: String) -> DataError {
    DataError::Config {
        source_name: "synthetic",
        message,
    }
}

impl SyntheticSpec {
    /// Checks the ranges documented on the fields.
    pub fn validate(&self) -> Result<(), DataError> {
        let s = self.shape;
        if !(2..=100).contains(&self.classes) {
            return Err(config(format!(
                "classes = {}, expected 2..=100",
                self.classes
            )));
        }
        if !(1..=4).contains(&s.channels) {
            return Err(config(format!("channels = {}, expected 1..=4", s.channels)));
        }
        if !(8..=1024).contains(&s.height) || !(8..=1024).contains(&s.width) {
            return Err(config(format!(
                "image size {}x{}, expected height and width in 8..=1024",
                s.height, s.width
            )));
        }
        for (what, n) in [("train", self.train), ("test", self.test)] {
            if n == 0 {
                return Err(config(format!("{what} = 0, expected at least 1 image")));
            }
            if n.saturating_mul(s.len()) > MAX_BYTES {
                return Err(config(format!(
                    "{what} = {n} images of {s} need more than {MAX_BYTES} bytes"
                )));
            }
        }
        if !self.noise.is_finite() || self.noise < 0.0 {
            return Err(config(format!(
                "noise = {}, expected a finite value >= 0",
                self.noise
            )));
        }
        Ok(())
    }
}

/// SplitMix64 finaliser: a well-mixed 64-bit hash of `x`.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Combines two values into a seed; used to derive independent streams.
pub fn mix_seed(a: u64, b: u64) -> u64 {
    splitmix64(a ^ splitmix64(b))
}

/// What fixes a class's look.
struct ClassPattern {
    /// Grating orientation in radians, 0..PI.
    theta: f32,
    /// Cycles across the image's shorter side.
    freq: f32,
    /// Weight of the grating in each channel, -1..=1.
    colour: Vec<f32>,
}

fn class_pattern(k: usize, shape: ImageShape) -> ClassPattern {
    // R2 low-discrepancy sequence: consecutive classes land far apart in
    // (orientation, frequency), for any number of classes.
    const A1: f64 = 0.754_877_666_246_692_7;
    const A2: f64 = 0.569_840_290_998_053_3;
    let u = (0.5 + k as f64 * A1).fract() as f32;
    let v = (0.5 + k as f64 * A2).fract() as f32;
    let side = shape.height.min(shape.width) as f32;
    let f_min = 1.5;
    // Stay well below the Nyquist limit (side / 2 cycles).
    let f_max = (side / 4.0).max(f_min + 0.5);
    let hue = (k as f32 * 0.381_966 + 0.1).fract();
    let colour = if shape.channels == 1 {
        vec![1.0]
    } else {
        (0..shape.channels)
            .map(|c| (2.0 * PI * (hue + c as f32 / shape.channels as f32)).cos())
            .collect()
    };
    ClassPattern {
        theta: PI * u,
        freq: f_min + (f_max - f_min) * v,
        colour,
    }
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f32 = 1.0 - rng.random::<f32>(); // in (0, 1]: ln is finite
    let u2: f32 = rng.random::<f32>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// Renders one image of `pattern` into `out` (CHW).
fn render(pattern: &ClassPattern, shape: ImageShape, noise: f32, rng: &mut StdRng, out: &mut [u8]) {
    let (h, w) = (shape.height as f32, shape.width as f32);
    let side = h.min(w);
    let phase = rng.random_range(0.0..2.0 * PI);
    let theta = pattern.theta + rng.random_range(-0.06..0.06);
    let freq = pattern.freq * rng.random_range(0.92..1.08);
    let cx = w * rng.random_range(0.3..0.7);
    let cy = h * rng.random_range(0.3..0.7);
    let sigma = side * rng.random_range(0.28..0.42);
    let amp = 100.0 * rng.random_range(0.6..1.0);
    let noise_std = 100.0 * noise;

    let (kx, ky) = (
        2.0 * PI * freq / side * theta.cos(),
        2.0 * PI * freq / side * theta.sin(),
    );
    let inv_2s2 = 1.0 / (2.0 * sigma * sigma);
    let plane = shape.plane();
    for y in 0..shape.height {
        let dy = y as f32 - cy;
        for x in 0..shape.width {
            let dx = x as f32 - cx;
            let g = (kx * x as f32 + ky * y as f32 + phase).cos()
                * (-(dx * dx + dy * dy) * inv_2s2).exp();
            let i = y * shape.width + x;
            for (c, &wc) in pattern.colour.iter().enumerate() {
                let n = if noise_std > 0.0 {
                    noise_std * normal(rng)
                } else {
                    0.0
                };
                out[c * plane + i] = (128.0 + amp * wc * g + n).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

fn split(
    spec: &SyntheticSpec,
    name: &str,
    stream: u64,
    n: usize,
    patterns: &[ClassPattern],
    classes: &[String],
) -> Dataset {
    let shape = spec.shape;
    let base = mix_seed(spec.seed, stream);
    let labels: Vec<u16> = (0..n).map(|i| (i % spec.classes) as u16).collect();
    let mut images = vec![0u8; n * shape.len()];
    images
        .par_chunks_mut(shape.len())
        .zip(labels.par_iter())
        .enumerate()
        .for_each(|(i, (out, &label))| {
            let mut rng = StdRng::seed_from_u64(mix_seed(base, i as u64));
            render(
                &patterns[usize::from(label)],
                shape,
                spec.noise,
                &mut rng,
                out,
            );
        });
    Dataset {
        name: format!("synthetic/{name}"),
        shape,
        images,
        labels,
        classes: classes.to_vec(),
    }
}

/// Generates both splits of `spec` (labels cycle through the classes in
/// order; classes are named `class-0`, `class-1`, ...). Errors when a
/// parameter is out of its documented range.
pub fn generate(spec: &SyntheticSpec) -> Result<Splits, DataError> {
    spec.validate()?;
    let patterns: Vec<ClassPattern> = (0..spec.classes)
        .map(|k| class_pattern(k, spec.shape))
        .collect();
    let classes: Vec<String> = (0..spec.classes).map(|k| format!("class-{k}")).collect();
    Ok(Splits {
        train: split(spec, "train", 1, spec.train, &patterns, &classes),
        test: split(spec, "test", 2, spec.test, &patterns, &classes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(classes: usize, shape: ImageShape, seed: u64) -> SyntheticSpec {
        SyntheticSpec {
            classes,
            train: 200,
            test: 100,
            shape,
            seed,
            noise: 0.2,
        }
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let s = spec(10, ImageShape::new(1, 28, 28), 7);
        let a = generate(&s).unwrap();
        let b = generate(&s).unwrap();
        assert_eq!(a.train.images, b.train.images);
        assert_eq!(a.test.images, b.test.images);
        assert_eq!(a.train.labels, b.train.labels);
        assert_ne!(a.train.images[..a.test.images.len()], a.test.images[..]);
        let c = generate(&spec(10, ImageShape::new(1, 28, 28), 8)).unwrap();
        assert_ne!(a.train.images, c.train.images);
        a.train.validate().unwrap();
        a.test.validate().unwrap();
        assert_eq!(a.train.class_counts(), vec![20; 10]);
        assert_eq!(a.train.name, "synthetic/train");
        assert_eq!(a.test.name, "synthetic/test");
    }

    #[test]
    fn shapes_and_class_counts() {
        for (k, shape) in [
            (2, ImageShape::new(1, 8, 8)),
            (100, ImageShape::new(3, 8, 12)),
            (10, ImageShape::new(3, 32, 32)),
            (7, ImageShape::new(4, 9, 8)),
        ] {
            let s = generate(&spec(k, shape, 3)).unwrap();
            assert_eq!(s.train.shape, shape);
            assert_eq!(s.train.images.len(), 200 * shape.len());
            assert_eq!(s.train.classes.len(), k);
            s.train.validate().unwrap();
            s.test.validate().unwrap();
        }
    }

    #[test]
    fn rejects_bad_parameters() {
        let ok = spec(10, ImageShape::new(1, 28, 28), 0);
        let cases = [
            (
                SyntheticSpec {
                    classes: 1,
                    ..ok.clone()
                },
                "classes = 1",
            ),
            (
                SyntheticSpec {
                    classes: 101,
                    ..ok.clone()
                },
                "classes = 101",
            ),
            (
                SyntheticSpec {
                    shape: ImageShape::new(0, 28, 28),
                    ..ok.clone()
                },
                "channels = 0",
            ),
            (
                SyntheticSpec {
                    shape: ImageShape::new(1, 7, 28),
                    ..ok.clone()
                },
                "image size 7x28",
            ),
            (
                SyntheticSpec {
                    train: 0,
                    ..ok.clone()
                },
                "train = 0",
            ),
            (
                SyntheticSpec {
                    test: 0,
                    ..ok.clone()
                },
                "test = 0",
            ),
            (
                SyntheticSpec {
                    noise: f32::NAN,
                    ..ok.clone()
                },
                "noise = NaN",
            ),
            (
                SyntheticSpec {
                    noise: -1.0,
                    ..ok.clone()
                },
                "noise = -1",
            ),
        ];
        for (s, want) in cases {
            let msg = generate(&s).unwrap_err().to_string();
            assert!(msg.starts_with("synthetic data: "), "{msg}");
            assert!(msg.contains(want), "{msg} lacks {want}");
        }
        let not_synth = DataSource::Mnist { path: "/m".into() };
        assert!(SyntheticSpec::try_from(&not_synth).is_err());
        let round: DataSource = ok.clone().into();
        assert_eq!(SyntheticSpec::try_from(&round).unwrap(), ok);
    }

    /// Mean intensity and (double-angle) orientation of the gradient field.
    fn features(img: &[u8], w: usize, h: usize) -> (f32, [f32; 2]) {
        let px = |x: usize, y: usize| f32::from(img[y * w + x]);
        let (mut gxx, mut gyy, mut gxy) = (0.0, 0.0, 0.0);
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                let gx = px(x + 1, y) - px(x - 1, y);
                let gy = px(x, y + 1) - px(x, y - 1);
                gxx += gx * gx;
                gyy += gy * gy;
                gxy += gx * gy;
            }
        }
        let e = gxx + gyy + 1e-6;
        let mean = img.iter().map(|&v| f32::from(v)).sum::<f32>() / img.len() as f32;
        (mean, [(gxx - gyy) / e, 2.0 * gxy / e])
    }

    #[test]
    fn classes_differ_but_not_by_mean_intensity() {
        let k = 4;
        let s = generate(&spec(k, ImageShape::new(1, 28, 28), 11)).unwrap();
        let feats = |ds: &Dataset| -> Vec<(f32, [f32; 2])> {
            (0..ds.len())
                .map(|i| features(ds.image(i), 28, 28))
                .collect()
        };
        let (train, test) = (feats(&s.train), feats(&s.test));
        let mut centroid = vec![[0.0f32; 2]; k];
        let mut mean = vec![0.0f32; k];
        let counts = s.train.class_counts();
        for ((m, o), &l) in train.iter().zip(&s.train.labels) {
            let l = usize::from(l);
            mean[l] += m / counts[l] as f32;
            centroid[l][0] += o[0] / counts[l] as f32;
            centroid[l][1] += o[1] / counts[l] as f32;
        }
        // Mean intensity carries (almost) no class information.
        for m in &mean {
            assert!((m - 128.0).abs() < 3.0, "{mean:?}");
        }
        // Orientation alone already separates the classes well.
        let correct = test
            .iter()
            .zip(&s.test.labels)
            .filter(|((_, o), l)| {
                let d = |c: &[f32; 2]| (c[0] - o[0]).powi(2) + (c[1] - o[1]).powi(2);
                let best = (0..k)
                    .min_by(|&a, &b| d(&centroid[a]).total_cmp(&d(&centroid[b])))
                    .unwrap();
                best == usize::from(**l)
            })
            .count();
        assert!(
            correct as f32 / test.len() as f32 > 0.8,
            "{correct}/{}",
            test.len()
        );
    }

    #[test]
    fn colour_depends_on_class() {
        let s = generate(&SyntheticSpec {
            noise: 0.0,
            ..spec(3, ImageShape::new(3, 16, 16), 5)
        })
        .unwrap();
        // Correlation of each channel with the red one: the sign pattern differs by class.
        let signs = |i: usize| -> Vec<bool> {
            let img = s.train.image(i);
            let p = 256;
            (1..3)
                .map(|c| {
                    (0..p)
                        .map(|j| (f32::from(img[j]) - 128.0) * (f32::from(img[c * p + j]) - 128.0))
                        .sum::<f32>()
                        > 0.0
                })
                .collect()
        };
        let per_class: Vec<Vec<bool>> = (0..3).map(signs).collect();
        assert!(
            per_class[0] != per_class[1] || per_class[1] != per_class[2],
            "{per_class:?}"
        );
    }
}
