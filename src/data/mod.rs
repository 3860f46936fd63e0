//! Labelled image datasets held in memory, validated on load, and batching.
//!
//! Every loader checks its input and reports a [`DataError`] that names the
//! offending file and says what is wrong and what was expected; bad input is
//! never a panic. Pixels are kept as `u8` in CHW order; [`batch`] turns them
//! into normalised `f32` batches.

pub mod cifar;
pub mod folder;
pub mod idx;
pub mod prep;
pub mod split;
pub mod synthetic;
pub mod write;

use std::fmt;
use std::path::{Path, PathBuf};

/// Where the Debian package `dataset-fashion-mnist` installs the Fashion-MNIST IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// CIFAR-10 class names, in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Shape of one image, channels first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ImageShape {
    /// Number of channels (1 = gray, 3 = RGB).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImageShape {
    /// A shape of `channels` x `height` x `width`.
    pub const fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }

    /// Number of values in one image: `channels * height * width`.
    pub const fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// True when any dimension is zero, i.e. an image holds no values.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of values in one channel plane: `height * width`.
    pub const fn plane(&self) -> usize {
        self.height * self.width
    }
}

/// Formats as `CxHxW`, e.g. `1x28x28`.
impl fmt::Display for ImageShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// A labelled image set held in memory as `u8` pixels, CHW order per image,
/// images back to back.
///
/// Invariants kept by every loader: `images.len() == len() * shape.len()`,
/// `labels.len() == len()`, and every label is `< classes.len()`.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Human-readable name, e.g. `fashion-mnist/train`.
    pub name: String,
    /// Shape of every image.
    pub shape: ImageShape,
    /// Pixels, `len() * shape.len()` bytes, image after image, each CHW.
    pub images: Vec<u8>,
    /// One label per image, each `< classes.len()`.
    pub labels: Vec<u16>,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image `i` (CHW, `shape.len()` bytes).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.shape.len();
        &self.images[i * n..(i + 1) * n]
    }

    /// A new set holding the images at `indices`, in that order (repeats allowed),
    /// with the same name, shape and classes.
    ///
    /// # Panics
    /// If an index is `>= len()`.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * self.shape.len());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            name: self.name.clone(),
            shape: self.shape,
            images,
            labels,
            classes: self.classes.clone(),
        }
    }

    /// The same images with `pad` zero pixels added on every side of every channel.
    pub fn padded(&self, pad: usize) -> Dataset {
        let (c, h, w) = (self.shape.channels, self.shape.height, self.shape.width);
        let shape = ImageShape::new(c, h + 2 * pad, w + 2 * pad);
        let mut images = vec![0u8; self.len() * shape.len()];
        for (i, out) in images.chunks_exact_mut(shape.len()).enumerate() {
            let src = self.image(i);
            for ch in 0..c {
                for y in 0..h {
                    let from = (ch * h + y) * w;
                    let to = (ch * shape.height + y + pad) * shape.width + pad;
                    out[to..to + w].copy_from_slice(&src[from..from + w]);
                }
            }
        }
        Dataset {
            name: self.name.clone(),
            shape,
            images,
            labels: self.labels.clone(),
            classes: self.classes.clone(),
        }
    }

    /// Number of images of each class, indexed by label (length `classes.len()`).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(usize::from(l)) {
                *c += 1;
            }
        }
        counts
    }

    /// Checks the invariants listed on [`Dataset`]; the error names the set.
    pub fn validate(&self) -> Result<(), DataError> {
        let invalid = |message: String| {
            Err(DataError::Invalid {
                path: PathBuf::from(&self.name),
                message,
            })
        };
        if self.images.len() != self.labels.len() * self.shape.len() {
            return invalid(format!(
                "{} bytes of pixels for {} images of {}, expected {}",
                self.images.len(),
                self.labels.len(),
                self.shape,
                self.labels.len() * self.shape.len()
            ));
        }
        if let Some((i, &l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| usize::from(l) >= self.classes.len())
        {
            return invalid(format!(
                "label {l} of image {i} is out of range, expected < {} (the number of classes)",
                self.classes.len()
            ));
        }
        Ok(())
    }
}

/// The training and test splits of one source.
#[derive(Clone, Debug)]
pub struct Splits {
    /// Training split.
    pub train: Dataset,
    /// Held-out test split.
    pub test: Dataset,
}

impl Splits {
    /// One line for reports and logs: `NAME (TRAIN train / TEST test, CxHxW)`, e.g.
    /// `fashion-mnist (60000 train / 10000 test, 1x28x28)`; `name` is the source's name
    /// ([`DataSource::name`]).
    pub fn describe(&self, name: &str) -> String {
        format!(
            "{name} ({} train / {} test, {})",
            self.train.len(),
            self.test.len(),
            self.train.shape
        )
    }
}

/// Why a dataset could not be loaded. Every message names the file (or the
/// source) and says what is wrong and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file exists but its content is wrong.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file (or folder) at fault.
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A required file or folder does not exist.
    #[error("{}: not found; {hint}", path.display())]
    Missing {
        /// The file or folder that was looked for.
        path: PathBuf,
        /// What was looked for and how to get it.
        hint: String,
    },
    /// An image file could not be decoded.
    #[error("{}: cannot decode image: {source}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// The source's parameters are unusable (no file involved).
    #[error("{source_name} data: {message}")]
    Config {
        /// The source, e.g. `synthetic`.
        source_name: &'static str,
        /// What is wrong and what was expected.
        message: String,
    },
}

impl DataError {
    /// An [`DataError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`DataError::Invalid`] for `path`.
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The file or folder the error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            DataError::Io { path, .. }
            | DataError::Invalid { path, .. }
            | DataError::Missing { path, .. }
            | DataError::Image { path, .. } => Some(path),
            DataError::Config { .. } => None,
        }
    }
}

/// Which CIFAR-100 label to use as the class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cifar100Labels {
    /// The 100 fine labels (default).
    #[default]
    Fine,
    /// The 20 coarse super-class labels.
    Coarse,
}

/// Where a dataset comes from: the `[data]` section of the TOML config,
/// selected by `kind = "fashion-mnist" | "mnist" | "cifar10" | "cifar100" | "folder" | "synthetic"`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum DataSource {
    /// IDX files of Fashion-MNIST; `path` defaults to [`FASHION_MNIST_DIR`]
    /// (Debian package `dataset-fashion-mnist`).
    FashionMnist {
        /// Folder holding the four IDX files (gzipped or raw).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathBuf>,
        /// Zero pixels added on every side: `pad = 2` gives 32x32 images, the input size the
        /// InDistill reference's layer sizes imply.
        #[serde(default, skip_serializing_if = "is_zero")]
        pad: usize,
    },
    /// IDX files of MNIST (same file names as Fashion-MNIST); classes "0".."9".
    Mnist {
        /// Folder holding the four IDX files (gzipped or raw).
        path: PathBuf,
    },
    /// CIFAR-10 binary version (`data_batch_1.bin`..`data_batch_5.bin`, `test_batch.bin`).
    Cifar10 {
        /// Folder holding the batches, or its parent with `cifar-10-batches-bin/`.
        path: PathBuf,
    },
    /// CIFAR-100 binary version (`train.bin`, `test.bin`).
    Cifar100 {
        /// Folder holding the files, or its parent with `cifar-100-binary/`.
        path: PathBuf,
        /// Fine (100 classes, default) or coarse (20 classes) labels.
        #[serde(default)]
        labels: Cifar100Labels,
    },
    /// `root/train/<class>/*.png|jpg|jpeg` and `root/test/<class>/...`; images are
    /// converted to gray (`channels = 1`) or RGB (`channels = 3`) and resized to
    /// `height` x `width`.
    Folder {
        /// The root folder.
        path: PathBuf,
        /// Channels after conversion: 1 (gray) or 3 (RGB, default).
        #[serde(default = "folder::default_channels")]
        channels: usize,
        /// Height after resizing (default 32).
        #[serde(default = "folder::default_side")]
        height: usize,
        /// Width after resizing (default 32).
        #[serde(default = "folder::default_side")]
        width: usize,
    },
    /// Generated data that needs nothing installed; see [`synthetic`].
    Synthetic {
        /// Number of classes, 2..=100.
        #[serde(default = "synthetic::default_classes")]
        classes: usize,
        /// Number of training images.
        #[serde(default = "synthetic::default_train")]
        train: usize,
        /// Number of test images.
        #[serde(default = "synthetic::default_test")]
        test: usize,
        /// Channels per image (1 or 3 usual).
        #[serde(default = "synthetic::default_channels")]
        channels: usize,
        /// Image height, >= 8.
        #[serde(default = "synthetic::default_side")]
        height: usize,
        /// Image width, >= 8.
        #[serde(default = "synthetic::default_side")]
        width: usize,
        /// Seed; the same seed gives byte-identical data.
        #[serde(default = "synthetic::default_seed")]
        seed: u64,
        /// Standard deviation of the additive pixel noise, relative to the pattern's
        /// full amplitude (0 = none).
        #[serde(default = "synthetic::default_noise")]
        noise: f32,
    },
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl DataSource {
    /// The `kind` of the source as written in the config, e.g. `fashion-mnist`.
    pub fn name(&self) -> &'static str {
        match self {
            DataSource::FashionMnist { .. } => "fashion-mnist",
            DataSource::Mnist { .. } => "mnist",
            DataSource::Cifar10 { .. } => "cifar10",
            DataSource::Cifar100 { .. } => "cifar100",
            DataSource::Folder { .. } => "folder",
            DataSource::Synthetic { .. } => "synthetic",
        }
    }

    /// The same source with relative paths taken relative to `base` (a config file's folder).
    pub fn relative_to(&self, base: &Path) -> Self {
        let mut out = self.clone();
        let path = match &mut out {
            DataSource::FashionMnist { path: Some(p), .. }
            | DataSource::Mnist { path: p }
            | DataSource::Cifar10 { path: p }
            | DataSource::Cifar100 { path: p, .. }
            | DataSource::Folder { path: p, .. } => Some(p),
            DataSource::FashionMnist { path: None, .. } | DataSource::Synthetic { .. } => None,
        };
        if let Some(p) = path
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
        out
    }

    /// The same source with relative paths made absolute (from the working directory), for
    /// configs saved into a run directory and read from elsewhere later.
    pub fn absolute(&self) -> Self {
        match std::env::current_dir() {
            Ok(cwd) => self.relative_to(&cwd),
            Err(_) => self.clone(),
        }
    }

    /// A synthetic source with the default parameters.
    pub fn synthetic_default() -> Self {
        synthetic::SyntheticSpec::default().into()
    }
}

/// Loads both splits of `source`, validating every file. The image shape is fixed by the
/// files or by the source's own parameters; the caller checks it fits the model.
pub fn load(source: &DataSource) -> Result<Splits, DataError> {
    let splits = match source {
        DataSource::FashionMnist { path, pad } => {
            let dir = path
                .clone()
                .unwrap_or_else(|| PathBuf::from(FASHION_MNIST_DIR));
            let s = idx::load_dir(
                &dir,
                source.name(),
                &FASHION_MNIST_CLASSES.map(String::from),
                idx::FASHION_MNIST_HINT,
            )?;
            if *pad > 0 {
                Splits {
                    train: s.train.padded(*pad),
                    test: s.test.padded(*pad),
                }
            } else {
                s
            }
        }
        DataSource::Mnist { path } => idx::load_dir(
            path,
            source.name(),
            &(0..10).map(|d| d.to_string()).collect::<Vec<_>>(),
            idx::MNIST_HINT,
        )?,
        DataSource::Cifar10 { path } => cifar::load_cifar10(path)?,
        DataSource::Cifar100 { path, labels } => cifar::load_cifar100(path, *labels)?,
        DataSource::Folder {
            path,
            channels,
            height,
            width,
        } => folder::load(path, ImageShape::new(*channels, *height, *width))?,
        DataSource::Synthetic { .. } => {
            let spec = synthetic::SyntheticSpec::try_from(source)?;
            synthetic::generate(&spec)?
        }
    };
    debug_assert!(splits.train.validate().is_ok() && splits.test.validate().is_ok());
    Ok(splits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_adds_zero_borders_around_every_channel() {
        let ds = Dataset {
            name: "t".into(),
            shape: ImageShape::new(2, 1, 2),
            images: vec![1, 2, 3, 4, 5, 6, 7, 8],
            labels: vec![0, 1],
            classes: vec!["a".into(), "b".into()],
        };
        let p = ds.padded(1);
        assert_eq!(p.shape, ImageShape::new(2, 3, 4));
        #[rustfmt::skip]
        assert_eq!(p.image(1), [
            0, 0, 0, 0,  0, 5, 6, 0,  0, 0, 0, 0,
            0, 0, 0, 0,  0, 7, 8, 0,  0, 0, 0, 0,
        ]);
        assert_eq!(p.labels, ds.labels);
        p.validate().unwrap();
    }

    fn tiny() -> Dataset {
        Dataset {
            name: "tiny".into(),
            shape: ImageShape::new(1, 1, 2),
            images: vec![1, 2, 3, 4, 5, 6],
            labels: vec![0, 1, 1],
            classes: vec!["a".into(), "b".into(), "c".into()],
        }
    }

    #[test]
    fn splits_describe_names_the_source_and_sizes() {
        let mut train = tiny();
        train.name = "synthetic/train".into();
        let mut test = tiny().subset(&[0]);
        test.name = "synthetic/test".into();
        let s = Splits { train, test };
        assert_eq!(
            s.describe("synthetic"),
            "synthetic (3 train / 1 test, 1x1x2)"
        );
    }

    #[test]
    fn shape_len_and_display() {
        let s = ImageShape::new(1, 28, 28);
        assert_eq!(s.len(), 784);
        assert_eq!(s.plane(), 784);
        assert!(!s.is_empty());
        assert_eq!(s.to_string(), "1x28x28");
        assert_eq!(ImageShape::new(3, 32, 32).to_string(), "3x32x32");
    }

    #[test]
    fn dataset_accessors() {
        let ds = tiny();
        assert_eq!(ds.len(), 3);
        assert!(!ds.is_empty());
        assert_eq!(ds.image(1), &[3, 4]);
        assert_eq!(ds.class_counts(), vec![1, 2, 0]);
        let sub = ds.subset(&[2, 0, 2]);
        assert_eq!(sub.images, vec![5, 6, 1, 2, 5, 6]);
        assert_eq!(sub.labels, vec![1, 0, 1]);
        assert_eq!(sub.classes, ds.classes);
        assert!(ds.validate().is_ok());
        let mut bad = ds.clone();
        bad.labels[2] = 3;
        let msg = bad.validate().unwrap_err().to_string();
        assert!(msg.contains("label 3 of image 2"), "{msg}");
        let mut bad = ds;
        bad.images.pop();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn data_source_toml() {
        #[derive(serde::Deserialize, serde::Serialize)]
        struct Config {
            data: DataSource,
        }
        let parse = |s: &str| toml::from_str::<Config>(s).map(|c| c.data);

        let fm = parse("[data]\nkind = \"fashion-mnist\"\n").unwrap();
        assert_eq!(fm, DataSource::FashionMnist { path: None, pad: 0 });
        assert_eq!(fm.name(), "fashion-mnist");

        let c100 =
            parse("[data]\nkind = \"cifar100\"\npath = \"/d\"\nlabels = \"coarse\"\n").unwrap();
        assert_eq!(
            c100,
            DataSource::Cifar100 {
                path: "/d".into(),
                labels: Cifar100Labels::Coarse
            }
        );
        assert_eq!(c100.name(), "cifar100");
        let c10 = parse("[data]\nkind = \"cifar10\"\npath = \"/d\"\n").unwrap();
        assert_eq!(c10.name(), "cifar10");

        let syn = parse("[data]\nkind = \"synthetic\"\nclasses = 4\n").unwrap();
        match &syn {
            DataSource::Synthetic {
                classes,
                train,
                test,
                channels,
                height,
                width,
                ..
            } => {
                assert_eq!(
                    (*classes, *train, *test, *channels, *height, *width),
                    (4, 2000, 500, 1, 28, 28)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(DataSource::synthetic_default().name(), "synthetic");

        // Round trip through TOML for every kind.
        for src in [
            fm,
            c100,
            c10,
            syn,
            DataSource::Mnist { path: "/m".into() },
            DataSource::Folder {
                path: "/f".into(),
                channels: 3,
                height: 32,
                width: 32,
            },
        ] {
            let text = toml::to_string(&Config { data: src.clone() }).unwrap();
            assert!(
                text.contains(&format!("kind = \"{}\"", src.name())),
                "{text}"
            );
            assert_eq!(parse(&text).unwrap(), src);
        }

        let err = parse("[data]\nkind = \"mnist\"\npath = \"/m\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        assert!(parse("[data]\nkind = \"imagenet\"\n").is_err());
        assert!(parse("[data]\nkind = \"mnist\"\n").is_err());
    }

    #[test]
    fn load_synthetic_ignores_shape() {
        let src = DataSource::Synthetic {
            classes: 3,
            train: 30,
            test: 9,
            channels: 3,
            height: 8,
            width: 10,
            seed: 1,
            noise: 0.1,
        };
        let s = load(&src).unwrap();
        assert_eq!(s.train.shape, ImageShape::new(3, 8, 10));
        assert_eq!((s.train.len(), s.test.len()), (30, 9));
    }

    #[test]
    fn error_display_names_path() {
        let e = DataError::invalid("/x/f.bin", "bad thing");
        assert_eq!(e.to_string(), "/x/f.bin: bad thing");
        assert_eq!(e.path(), Some(Path::new("/x/f.bin")));
    }
}
