//! Model specifications: the one source of truth for a network's layers and widths.
//!
//! A [`ModelSpec`] describes a conv-stack family member independently of the data it will
//! see; an [`Architecture`] binds it to an input shape and a class count, which fixes every
//! tensor shape, the parameter count and the MACs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::ImageShape;

/// What a block computes before its optional pooling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockKind {
    /// One convolution: conv (kernel, padding, stride) -> [BN] -> ReLU.
    #[default]
    Conv,
    /// MobileNet-v1 depthwise-separable convolution: depthwise conv (kernel, padding,
    /// stride; one filter per input channel) -> [BN] -> ReLU, then pointwise 1x1 conv to
    /// `width` channels -> [BN] -> ReLU. The block's output (its tap) is the pointwise part's.
    Separable,
}

impl BlockKind {
    fn is_conv(&self) -> bool {
        *self == BlockKind::Conv
    }
}

/// One block: conv -> [batch norm] -> ReLU -> [max pool], or the depthwise-separable form
/// (see [`BlockKind`]). New fields serialise only when they differ from their defaults, so
/// the specs (and fingerprints) of existing models are unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BlockSpec {
    /// Output channels.
    pub width: usize,
    /// `conv` (default) or `separable`.
    #[serde(default, skip_serializing_if = "BlockKind::is_conv")]
    pub kind: BlockKind,
    /// Square kernel size (of the depthwise conv for a separable block).
    #[serde(default = "default_kernel")]
    pub kernel: usize,
    /// Zero padding on each side (0 = "valid").
    #[serde(default)]
    pub padding: usize,
    /// Convolution stride (of the depthwise conv for a separable block); default 1.
    #[serde(default = "default_stride", skip_serializing_if = "is_one")]
    pub stride: usize,
    /// Batch normalisation after the convolution (after both convs of a separable block).
    #[serde(default = "default_true")]
    pub batch_norm: bool,
    /// Max-pool kernel and stride after the ReLU; 0 or 1 = no pooling.
    #[serde(default = "default_pool")]
    pub pool: usize,
}

fn default_kernel() -> usize {
    3
}
fn default_pool() -> usize {
    2
}
fn default_true() -> bool {
    true
}
fn default_stride() -> usize {
    1
}
fn is_one(v: &usize) -> bool {
    *v == 1
}
fn is_false(v: &bool) -> bool {
    !*v
}

impl BlockSpec {
    /// Spatial size after the convolution(s), before pooling, for an `h` x `w` input
    /// (the caller has checked that the kernel fits the padded input).
    pub fn conv_output(&self, h: usize, w: usize) -> (usize, usize) {
        let s = self.stride.max(1);
        (
            (h + 2 * self.padding - self.kernel) / s + 1,
            (w + 2 * self.padding - self.kernel) / s + 1,
        )
    }

    /// Trainable parameters of the block for `cin` input channels (weights, biases, BN
    /// scale and shift; PyTorch's count).
    pub fn trainable_params(&self, cin: usize) -> usize {
        let k2 = self.kernel * self.kernel;
        let bn = |c: usize| if self.batch_norm { 2 * c } else { 0 };
        match self.kind {
            BlockKind::Conv => self.width * cin * k2 + self.width + bn(self.width),
            BlockKind::Separable => {
                cin * k2 + cin + bn(cin) + self.width * cin + self.width + bn(self.width)
            }
        }
    }

    /// Multiply-accumulates of the block's convolutions for `cin` input channels and an
    /// `h` x `w` input.
    pub fn macs(&self, cin: usize, h: usize, w: usize) -> u64 {
        let (ch, cw) = self.conv_output(h, w);
        let k2 = self.kernel * self.kernel;
        let plane = (ch * cw) as u64;
        match self.kind {
            BlockKind::Conv => plane * (self.width * cin * k2) as u64,
            BlockKind::Separable => plane * (cin * k2 + self.width * cin) as u64,
        }
    }
}

/// Scales every block's width at [`ModelSpec::bind`]: `max(1, round(width x multiplier))`
/// (MobileNet's alpha). Compared and hashed by its bits, so specs stay `Eq` and `Hash`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WidthMultiplier(pub f64);

impl Default for WidthMultiplier {
    fn default() -> Self {
        Self(1.0)
    }
}

impl PartialEq for WidthMultiplier {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for WidthMultiplier {}

impl std::hash::Hash for WidthMultiplier {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

impl WidthMultiplier {
    /// The largest multiplier accepted.
    pub const MAX: f64 = 64.0;

    fn is_one(&self) -> bool {
        self.0 == 1.0
    }

    /// `width` scaled: `max(1, round(width x multiplier))`.
    pub fn apply(&self, width: usize) -> usize {
        ((width as f64 * self.0).round() as usize).max(1)
    }
}

/// A conv-stack network: blocks, then hidden fully connected layers (ReLU), then the classifier.
///
/// The output of the last hidden layer is the *embedding* used by PKT and by retrieval.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ModelSpec {
    /// Preset or user name, e.g. `cnn32-small`.
    pub name: String,
    /// Convolutional blocks, shallow to deep.
    pub blocks: Vec<BlockSpec>,
    /// Hidden fully connected widths; must not be empty (the last is the embedding).
    pub fc: Vec<usize>,
    /// Multiplies every block width (MobileNet's alpha); default 1. Applied by
    /// [`ModelSpec::bind`]: the bound architecture holds the scaled widths and multiplier 1.
    #[serde(default, skip_serializing_if = "WidthMultiplier::is_one")]
    pub width_multiplier: WidthMultiplier,
    /// Global average pooling after the last block: the fc layers see one value per channel
    /// instead of the flattened feature map. Default off.
    #[serde(default, skip_serializing_if = "is_false")]
    pub global_pool: bool,
}

/// Errors found while reading or checking a model specification.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The spec file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The spec file is not valid TOML for a model spec.
    #[error("{path}: {message}")]
    Parse {
        /// File that failed.
        path: PathBuf,
        /// Parser message (names the field).
        message: String,
    },
    /// No preset of that name and no such file.
    #[error("unknown model '{0}': expected a preset ({presets}) or a path to a model TOML file", presets = PRESETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))]
    Unknown(String),
    /// The spec cannot be built for this input.
    #[error("model '{model}': {message}")]
    Invalid {
        /// Model name.
        model: String,
        /// What is wrong.
        message: String,
    },
}

/// Built-in presets, shipped in the binary (the files in `models/` are the same text).
pub const PRESETS: &[(&str, &str)] = &[
    ("cnn32", include_str!("../../models/cnn32.toml")),
    ("cnn32-small", include_str!("../../models/cnn32-small.toml")),
    ("cnn32-large", include_str!("../../models/cnn32-large.toml")),
    ("mobilenet96", include_str!("../../models/mobilenet96.toml")),
    (
        "mobilenet96-large",
        include_str!("../../models/mobilenet96-large.toml"),
    ),
];

impl ModelSpec {
    /// Parses a spec from TOML text; `origin` names the source in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, SpecError> {
        toml::from_str(text).map_err(|e| SpecError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })
    }

    /// A built-in preset by name, or a spec file by path (relative to `base_dir`).
    pub fn resolve(name_or_path: &str, base_dir: &Path) -> Result<Self, SpecError> {
        if let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == name_or_path) {
            return Self::from_toml(text, Path::new(&format!("<preset {name_or_path}>")));
        }
        let path = base_dir.join(name_or_path);
        if path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|source| SpecError::Io {
                path: path.clone(),
                source,
            })?;
            return Self::from_toml(&text, &path);
        }
        Err(SpecError::Unknown(name_or_path.to_string()))
    }

    /// The spec with the width multiplier applied to every block (multiplier 1 after).
    pub fn scaled(&self) -> Self {
        let mut spec = self.clone();
        for b in &mut spec.blocks {
            b.width = self.width_multiplier.apply(b.width);
        }
        spec.width_multiplier = WidthMultiplier::default();
        spec
    }

    /// Binds the spec to an input shape and class count, checking every layer fits. The
    /// width multiplier is applied here: the architecture's spec holds the scaled widths.
    pub fn bind(&self, input: ImageShape, classes: usize) -> Result<Architecture, SpecError> {
        let invalid = |message: String| SpecError::Invalid {
            model: self.name.clone(),
            message,
        };
        let m = self.width_multiplier.0;
        if !(m.is_finite() && m > 0.0 && m <= WidthMultiplier::MAX) {
            return Err(invalid(format!(
                "width-multiplier {m} (expected a number > 0 and <= {})",
                WidthMultiplier::MAX
            )));
        }
        let spec = self.scaled();
        if spec.blocks.is_empty() {
            return Err(invalid("needs at least one conv block".into()));
        }
        if spec.fc.is_empty() {
            return Err(invalid(
                "needs at least one hidden fc layer (the embedding)".into(),
            ));
        }
        if classes < 2 {
            return Err(invalid(format!("needs at least 2 classes, got {classes}")));
        }
        let (mut h, mut w) = (input.height, input.width);
        let mut shapes = Vec::with_capacity(spec.blocks.len());
        for (i, b) in spec.blocks.iter().enumerate() {
            if b.width == 0 || b.kernel == 0 {
                return Err(invalid(format!("block {i}: width and kernel must be > 0")));
            }
            if b.stride == 0 || b.stride > b.kernel.max(2) {
                return Err(invalid(format!(
                    "block {i}: stride {} (expected 1 to {}: a stride wider than the kernel skips pixels)",
                    b.stride,
                    b.kernel.max(2)
                )));
            }
            if b.padding >= b.kernel {
                return Err(invalid(format!(
                    "block {i}: padding {} must be smaller than the {k}x{k} kernel (a wider border only adds zeros)",
                    b.padding,
                    k = b.kernel
                )));
            }
            if b.padding >= h || b.padding >= w {
                return Err(invalid(format!(
                    "block {i}: padding {} must be smaller than its {h}x{w} input (input {input})",
                    b.padding
                )));
            }
            let (ph, pw) = (h + 2 * b.padding, w + 2 * b.padding);
            if ph < b.kernel || pw < b.kernel {
                return Err(invalid(format!(
                    "block {i}: a {k}x{k} kernel does not fit the {h}x{w} input (input {input})",
                    k = b.kernel
                )));
            }
            let (ch, cw) = b.conv_output(h, w);
            let (oh, ow) = if b.pool > 1 {
                (ch / b.pool, cw / b.pool)
            } else {
                (ch, cw)
            };
            if oh == 0 || ow == 0 {
                return Err(invalid(format!(
                    "block {i}: {ch}x{cw} feature map is too small for a {p}x{p} pool (input {input})",
                    p = b.pool
                )));
            }
            h = oh;
            w = ow;
            shapes.push(ImageShape::new(b.width, h, w));
        }
        if spec.fc.contains(&0) {
            return Err(invalid("fc widths must be > 0".into()));
        }
        let arch = Architecture {
            spec,
            input,
            classes,
            block_shapes: shapes,
        };
        // Refuse what cannot be allocated before anything is (or any artifact is written).
        arch.check_memory(1)?;
        Ok(arch)
    }
}

/// The most memory a model may need for its parameters and the activations of one batch,
/// bytes, whatever the machine has: 4 GiB.
pub const MEMORY_LIMIT: u64 = 4 << 30;

/// Memory a model needs, bytes (estimates: f32 values, training extras not included).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// Parameters (weights, biases, BN scale/shift and running statistics).
    pub parameters: f64,
    /// Activations of one image through every layer (conv, BN, ReLU, pool, fc outputs).
    pub activations_per_image: f64,
}

impl MemoryEstimate {
    /// Parameters plus the activations of `batch` images.
    pub fn for_batch(&self, batch: usize) -> f64 {
        self.parameters + self.activations_per_image * batch as f64
    }
}

/// `MemAvailable` of /proc/meminfo in bytes, when the system says.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The memory limit that applies here: [`MEMORY_LIMIT`], or the memory this machine has
/// available when that is smaller.
pub fn memory_limit() -> u64 {
    available_memory().map_or(MEMORY_LIMIT, |a| a.min(MEMORY_LIMIT))
}

/// `40.0 GiB`.
fn gigabytes(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / (1u64 << 30) as f64)
}

impl Architecture {
    /// What this model needs, computed in floating point so that absurd specs cannot
    /// overflow.
    pub fn memory(&self) -> MemoryEstimate {
        const F32: f64 = 4.0;
        let mut params = 0.0f64;
        let mut acts = 0.0f64;
        let mut cin = self.input.channels as f64;
        let (mut h, mut w) = (self.input.height as f64, self.input.width as f64);
        for (b, out) in self.spec.blocks.iter().zip(&self.block_shapes) {
            let width = b.width as f64;
            let k = b.kernel as f64;
            let p = b.padding as f64;
            let st = b.stride.max(1) as f64;
            let ch = ((h + 2.0 * p - k) / st).floor() + 1.0;
            let cw = ((w + 2.0 * p - k) / st).floor() + 1.0;
            // conv output, ReLU output, BN output when present.
            let per_value = if b.batch_norm { 3.0 } else { 2.0 };
            let bn_params = if b.batch_norm { 4.0 } else { 0.0 };
            match b.kind {
                BlockKind::Conv => {
                    params += width * cin * k * k + width + bn_params * width;
                }
                BlockKind::Separable => {
                    params += cin * k * k + cin + bn_params * cin;
                    params += width * cin + width + bn_params * width;
                    acts += cin * ch * cw * per_value;
                }
            }
            acts += width * ch * cw * per_value;
            if b.pool > 1 {
                acts += out.len() as f64;
            }
            cin = width;
            h = out.height as f64;
            w = out.width as f64;
        }
        if self.spec.global_pool {
            acts += cin;
        }
        let mut fin = self.flat_features() as f64;
        for &f in self.spec.fc.iter().chain(std::iter::once(&self.classes)) {
            let f = f as f64;
            params += fin * f + f;
            // Linear output and ReLU output.
            acts += 2.0 * f;
            fin = f;
        }
        MemoryEstimate {
            parameters: params * F32,
            activations_per_image: acts * F32,
        }
    }

    /// Refuses a model whose parameters plus the activations of `batch` images exceed
    /// [`memory_limit`], naming the figure: `needs 40.0 GiB for parameters (limit 4.0 GiB)`.
    pub fn check_memory(&self, batch: usize) -> Result<(), SpecError> {
        let limit = memory_limit();
        let m = self.memory();
        let total = m.for_batch(batch.max(1));
        if total <= limit as f64 {
            return Ok(());
        }
        let what = if m.parameters > limit as f64 {
            format!("{} for parameters", gigabytes(m.parameters))
        } else {
            format!(
                "{} for parameters and the activations of {} image{} ({} per image)",
                gigabytes(total),
                batch.max(1),
                if batch > 1 { "s" } else { "" },
                gigabytes(m.activations_per_image)
            )
        };
        Err(SpecError::Invalid {
            model: self.spec.name.clone(),
            message: format!("needs {what} (limit {})", gigabytes(limit as f64)),
        })
    }
}

/// A spec bound to an input shape and a class count: every shape is known.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Architecture {
    /// The layers.
    pub spec: ModelSpec,
    /// Input image shape.
    pub input: ImageShape,
    /// Number of classes (logits).
    pub classes: usize,
    /// Output shape of every block (after ReLU and pooling): the taps.
    pub block_shapes: Vec<ImageShape>,
}

impl Architecture {
    /// Input width of the first fc layer: the flattened last block output, or its channel
    /// count after global average pooling.
    pub fn flat_features(&self) -> usize {
        let last = self.block_shapes.last();
        if self.spec.global_pool {
            last.map_or(0, |s| s.channels)
        } else {
            last.map_or(0, ImageShape::len)
        }
    }

    /// Embedding width (last hidden fc layer).
    pub fn embedding_dim(&self) -> usize {
        *self.spec.fc.last().expect("bind() checked fc is not empty")
    }

    /// Names of the taps, shallow to deep: `block0`, `block1`, ….
    pub fn tap_names(&self) -> Vec<String> {
        (0..self.spec.blocks.len())
            .map(|i| format!("block{i}"))
            .collect()
    }

    /// Trainable parameters (conv/linear weights and biases, BN scale and shift), as PyTorch
    /// counts them; BN running statistics are not included.
    pub fn trainable_params(&self) -> usize {
        let mut total = 0;
        let mut cin = self.input.channels;
        for b in &self.spec.blocks {
            total += b.trainable_params(cin);
            cin = b.width;
        }
        let mut fin = self.flat_features();
        for &f in self.spec.fc.iter().chain(std::iter::once(&self.classes)) {
            total += fin * f + f;
            fin = f;
        }
        total
    }

    /// Multiply-accumulates of one forward pass for one image (convolutions and fc layers).
    pub fn macs(&self) -> u64 {
        let mut total = 0u64;
        let mut cin = self.input.channels;
        let (mut h, mut w) = (self.input.height, self.input.width);
        for (b, out) in self.spec.blocks.iter().zip(&self.block_shapes) {
            total += b.macs(cin, h, w);
            cin = b.width;
            h = out.height;
            w = out.width;
        }
        let mut fin = self.flat_features();
        for &f in self.spec.fc.iter().chain(std::iter::once(&self.classes)) {
            total += (fin * f) as u64;
            fin = f;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(name: &str) -> ModelSpec {
        ModelSpec::resolve(name, Path::new(".")).unwrap()
    }

    #[test]
    fn cnn32_matches_the_pytorch_parameter_count() {
        // The InDistill reference Cifar_Tiny-style net has 57,994 trainable parameters on
        // 3x32x32 CIFAR-10 (PyTorch count, BN running statistics excluded).
        let arch = preset("cnn32")
            .bind(ImageShape::new(3, 32, 32), 10)
            .unwrap();
        assert_eq!(arch.trainable_params(), 57_994);
        assert_eq!(arch.flat_features(), 256);
        assert_eq!(arch.embedding_dim(), 128);
    }

    #[test]
    fn taps_have_the_expected_shapes_on_fashion_mnist() {
        let arch = preset("cnn32-small")
            .bind(ImageShape::new(1, 28, 28), 10)
            .unwrap();
        let shapes: Vec<_> = arch.block_shapes.iter().map(|s| s.to_string()).collect();
        assert_eq!(shapes, ["8x13x13", "16x5x5", "32x1x1"]);
        assert_eq!(arch.tap_names(), ["block0", "block1", "block2"]);
    }

    #[test]
    fn presets_share_depth_and_differ_in_width() {
        let small = preset("cnn32-small");
        let base = preset("cnn32");
        let large = preset("cnn32-large");
        assert_eq!(small.blocks.len(), base.blocks.len());
        assert_eq!(large.blocks.len(), base.blocks.len());
        for ((s, b), l) in small.blocks.iter().zip(&base.blocks).zip(&large.blocks) {
            assert!(s.width < b.width && b.width < l.width);
        }
    }

    #[test]
    fn too_small_input_is_refused_with_the_block_named() {
        let err = preset("cnn32")
            .bind(ImageShape::new(1, 8, 8), 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("block 1") || err.contains("block 2"), "{err}");
    }

    fn one_block(width: usize, padding: usize, fc: usize) -> ModelSpec {
        ModelSpec {
            name: "huge".into(),
            blocks: vec![BlockSpec {
                width,
                kind: BlockKind::Conv,
                kernel: 3,
                padding,
                stride: 1,
                batch_norm: true,
                pool: 2,
            }],
            fc: vec![fc],
            width_multiplier: WidthMultiplier::default(),
            global_pool: false,
        }
    }

    #[test]
    fn huge_specs_are_refused_with_the_memory_figure() {
        let input = ImageShape::new(1, 28, 28);
        for spec in [
            one_block(10_000_000_000, 1, 8),
            one_block(8, 1, 100_000_000_000),
        ] {
            let err = spec.bind(input, 10).unwrap_err().to_string();
            assert!(
                err.starts_with("model 'huge': needs ")
                    && err.contains(" GiB for parameters")
                    && err.contains("(limit "),
                "{err}"
            );
        }
        // The activations of a batch count too.
        let arch = one_block(64, 1, 64).bind(input, 10).unwrap();
        assert!(arch.check_memory(32).is_ok());
        let err = arch.check_memory(1 << 30).unwrap_err().to_string();
        assert!(err.contains("activations of 1073741824 images"), "{err}");
    }

    #[test]
    fn padding_as_wide_as_the_kernel_or_input_is_refused() {
        let input = ImageShape::new(1, 28, 28);
        let err = one_block(8, 100_000, 8)
            .bind(input, 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("padding 100000"), "{err}");
        assert!(one_block(8, 3, 8).bind(input, 10).is_err());
        assert!(one_block(8, 2, 8).bind(input, 10).is_ok());
        let mut spec = one_block(8, 2, 8);
        spec.blocks[0].kernel = 5;
        assert!(spec.bind(ImageShape::new(1, 2, 2), 10).is_err());
    }

    /// Specs without the new fields serialise as before (fingerprints and metadata of
    /// existing models are unchanged).
    #[test]
    fn existing_specs_serialise_as_before() {
        let arch = preset("cnn32-small")
            .bind(ImageShape::new(1, 28, 28), 10)
            .unwrap();
        let block = |w: usize| {
            format!(r#"{{"width":{w},"kernel":3,"padding":0,"batch-norm":true,"pool":2}}"#)
        };
        assert_eq!(
            serde_json::to_string(&arch.spec).unwrap(),
            format!(
                r#"{{"name":"cnn32-small","blocks":[{},{},{}],"fc":[64]}}"#,
                block(8),
                block(16),
                block(32)
            )
        );
    }

    #[test]
    fn mobilenet96_shapes_parameters_and_macs() {
        let arch = preset("mobilenet96")
            .bind(ImageShape::new(3, 96, 96), 10)
            .unwrap();
        let shapes: Vec<_> = arch.block_shapes.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            shapes,
            [
                "16x48x48",
                "32x48x48",
                "64x24x24",
                "64x24x24",
                "128x12x12",
                "128x6x6"
            ]
        );
        assert_eq!(arch.flat_features(), 128);
        // Counted by hand: stem conv 3->16 (3x3) + BN; then per separable block cin->cout:
        // depthwise cin*9 + cin, BN 2*cin, pointwise cout*cin + cout, BN 2*cout.
        let sep = |cin: usize, cout: usize| cin * 9 + cin + 2 * cin + cout * cin + cout + 2 * cout;
        let blocks = 16 * 27
            + 16
            + 32
            + sep(16, 32)
            + sep(32, 64)
            + sep(64, 64)
            + sep(64, 128)
            + sep(128, 128);
        let fc = 128 * 64 + 64 + 64 * 10 + 10;
        assert_eq!(arch.trainable_params(), blocks + fc);
        // MACs: output plane x (depthwise k*k*cin + pointwise cin*cout).
        let macs = 48 * 48 * 16 * 27
            + 48 * 48 * (16 * 9 + 16 * 32)
            + 24 * 24 * (32 * 9 + 32 * 64)
            + 24 * 24 * (64 * 9 + 64 * 64)
            + 12 * 12 * (64 * 9 + 64 * 128)
            + 6 * 6 * (128 * 9 + 128 * 128)
            + 128 * 64
            + 64 * 10;
        assert_eq!(arch.macs(), macs as u64);
        // The spec round-trips through its serialised form (as in a checkpoint header).
        let text = serde_json::to_string(&arch).unwrap();
        let back: Architecture = serde_json::from_str(&text).unwrap();
        assert_eq!(back, arch);
        assert_eq!(back.spec.bind(back.input, 10).unwrap(), arch);
    }

    #[test]
    fn width_multiplier_scales_every_block_at_bind() {
        let input = ImageShape::new(3, 96, 96);
        let base = preset("mobilenet96").bind(input, 10).unwrap();
        let large = preset("mobilenet96-large").bind(input, 10).unwrap();
        for (b, l) in base.spec.blocks.iter().zip(&large.spec.blocks) {
            assert_eq!(l.width, 2 * b.width);
        }
        assert_eq!(large.spec.width_multiplier, WidthMultiplier::default());
        let mut spec = preset("mobilenet96");
        spec.width_multiplier = WidthMultiplier(0.3);
        let widths: Vec<_> = spec
            .bind(input, 10)
            .unwrap()
            .spec
            .blocks
            .iter()
            .map(|b| b.width)
            .collect();
        assert_eq!(widths, [5, 10, 19, 19, 38, 38]);
        for bad in [0.0, -1.0, f64::NAN, 1000.0] {
            spec.width_multiplier = WidthMultiplier(bad);
            let e = spec.bind(input, 10).unwrap_err().to_string();
            assert!(e.contains("width-multiplier"), "{e}");
        }
    }

    #[test]
    fn a_stride_wider_than_the_kernel_is_refused() {
        let mut spec = one_block(8, 1, 8);
        spec.blocks[0].stride = 4;
        let e = spec
            .bind(ImageShape::new(1, 28, 28), 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("block 0: stride 4"), "{e}");
        spec.blocks[0].stride = 0;
        assert!(spec.bind(ImageShape::new(1, 28, 28), 10).is_err());
        spec.blocks[0].stride = 2;
        let arch = spec.bind(ImageShape::new(1, 28, 28), 10).unwrap();
        // (28 + 2 - 3) / 2 + 1 = 14, then the 2x2 pool: 7.
        assert_eq!(arch.block_shapes[0].to_string(), "8x7x7");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = ModelSpec::from_toml(
            "name='x'\nfc=[4]\n[[blocks]]\nwidth=4\nwidht=3\n",
            Path::new("m.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("m.toml") && err.contains("widht"), "{err}");
    }

    #[test]
    fn unknown_model_lists_presets() {
        let err = ModelSpec::resolve("resnet9000", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cnn32-small"), "{err}");
    }
}
