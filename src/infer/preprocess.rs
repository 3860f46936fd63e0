//! How to feed a model that distill-edge did not write: the input size, per-channel mean and
//! std, channel order and which output holds the logits, from command-line flags over a small
//! TOML file (`--preprocess FILE`) over the model's own metadata; and the inputs themselves,
//! either images of a labelled dataset prepared that way or seeded random inputs.
//!
//! A preprocessing file:
//!
//! ```toml
//! input-size = "3x224x224"        # CxHxW of one image (needed when the model's are symbolic)
//! mean = [0.485, 0.456, 0.406]    # per channel, on pixels scaled to [0, 1], model's order
//! std = [0.229, 0.224, 0.225]
//! channel-order = "rgb"           # or "bgr": the order of the model's input channels
//! logits-output = "logits"        # output name, or its index (default: `logits`, else the first)
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::data::prep::Normalization;
use crate::onnx::proto;

/// Errors resolving the preprocessing.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The preprocessing file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong (names the field).
        message: String,
    },
    /// A value (flag or file field) that does not fit the model.
    #[error("{0}")]
    Invalid(String),
}

/// The channel order of the model's input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue (the datasets' order).
    #[default]
    Rgb,
    /// Blue, green, red (OpenCV-trained models).
    Bgr,
}

impl std::str::FromStr for ChannelOrder {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rgb" => Ok(Self::Rgb),
            "bgr" => Ok(Self::Bgr),
            other => Err(format!("channel order {other}: expected rgb or bgr")),
        }
    }
}

/// The `--preprocess` file: every key optional, kebab-case, unknown keys refused.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PreprocessFile {
    /// `CxHxW`.
    pub input_size: Option<String>,
    /// Per-channel mean (pixels in `[0, 1]`).
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation.
    pub std: Option<Vec<f32>>,
    /// `rgb` or `bgr`.
    pub channel_order: Option<ChannelOrder>,
    /// Output name or index.
    pub logits_output: Option<toml::Value>,
}

/// What the command line says (each overrides the file's value).
#[derive(Clone, Debug, Default)]
pub struct PreprocessOverrides {
    /// `--preprocess FILE`.
    pub file: Option<PathBuf>,
    /// `--input-size CxHxW`.
    pub input_size: Option<String>,
    /// `--mean`.
    pub mean: Option<Vec<f32>>,
    /// `--std`.
    pub std: Option<Vec<f32>>,
    /// `--channel-order`.
    pub channel_order: Option<ChannelOrder>,
    /// `--logits-output NAME|INDEX`.
    pub logits_output: Option<String>,
}

/// The resolved preprocessing of one model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Preprocess {
    /// `[c, h, w]` of one input image.
    pub input: [usize; 3],
    /// Normalisation (in the model's channel order); `None` when neither the flags, the file
    /// nor the model give one.
    pub normalization: Option<Normalization>,
    /// Channel order of the model's input.
    pub channel_order: ChannelOrder,
    /// Index of the logits output.
    pub logits_output: usize,
    /// Name of that output.
    pub logits_name: String,
}

/// Parses `CxHxW` (e.g. `3x224x224`); `what` names the flag or field in the error.
pub fn parse_size(text: &str, what: &str) -> Result<[usize; 3], String> {
    let parts: Vec<Option<usize>> = text
        .split('x')
        .map(|p| p.trim().parse().ok().filter(|&v| v > 0))
        .collect();
    match parts[..] {
        [Some(c), Some(h), Some(w)] => Ok([c, h, w]),
        _ => Err(format!(
            "{what} {text:?}: expected CxHxW with positive integers, e.g. 3x224x224"
        )),
    }
}

/// Reads a preprocessing file.
pub fn read_file(path: &Path) -> Result<PreprocessFile, PreprocessError> {
    let text = std::fs::read_to_string(path).map_err(|e| PreprocessError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| PreprocessError::File {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}

impl Preprocess {
    /// Resolves the preprocessing of the model `bytes` (read from `path`): flags over the
    /// file over the model's metadata (`metadata_norm`) and declared input.
    pub fn resolve(
        path: &Path,
        bytes: &[u8],
        overrides: &PreprocessOverrides,
        metadata_norm: Option<&Normalization>,
    ) -> Result<Self, PreprocessError> {
        let invalid = PreprocessError::Invalid;
        let file = overrides
            .file
            .as_deref()
            .map(read_file)
            .transpose()?
            .unwrap_or_default();
        let file_name = overrides
            .file
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let model =
            proto::decode(bytes).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        let declared = proto::input_shape(&model, 0).unwrap_or_default();
        let fixed = |i: usize| match declared.get(i) {
            Some(proto::Dim::Fixed(v)) if *v > 0 => Some(*v as usize),
            _ => None,
        };
        let given = match (&overrides.input_size, &file.input_size) {
            (Some(t), _) => Some(parse_size(t, "--input-size").map_err(invalid)?),
            (None, Some(t)) => {
                Some(parse_size(t, &format!("{file_name}: input-size")).map_err(invalid)?)
            }
            (None, None) => None,
        };
        let input = match (given, fixed(1), fixed(2), fixed(3)) {
            (Some(g), ..) => {
                for (i, what) in [(1, "channels"), (2, "height"), (3, "width")] {
                    if let Some(d) = fixed(i)
                        && d != g[i - 1]
                    {
                        return Err(invalid(format!(
                            "input size {}x{}x{}: the model {} declares {what} {d}",
                            g[0],
                            g[1],
                            g[2],
                            path.display()
                        )));
                    }
                }
                g
            }
            (None, Some(c), Some(h), Some(w)) => [c, h, w],
            (None, ..) => {
                return Err(invalid(format!(
                    "{}: the input's size is not fixed in the model ({declared:?}): give --input-size CxHxW or input-size in a --preprocess file",
                    path.display()
                )));
            }
        };
        let mean = overrides.mean.clone().or(file.mean.clone());
        let std = overrides.std.clone().or(file.std.clone());
        let normalization = match (mean, std) {
            (Some(mean), Some(std)) => Some(Normalization { mean, std }),
            (None, None) => metadata_norm.cloned(),
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid(
                    "give both the mean and the std (--mean and --std, or mean and std in the preprocessing file)".into(),
                ));
            }
        };
        if let Some(n) = &normalization {
            let ok = n.mean.len() == input[0]
                && n.std.len() == input[0]
                && n.mean.iter().all(|m| m.is_finite())
                && n.std.iter().all(|s| s.is_finite() && *s > 0.0);
            if !ok {
                return Err(invalid(format!(
                    "normalisation mean {:?} / std {:?}: expected {} finite values each (one per input channel), std > 0",
                    n.mean, n.std, input[0]
                )));
            }
        }
        let outputs: Vec<String> = model
            .graph
            .as_ref()
            .map(|g| g.output.iter().map(|o| o.name().to_string()).collect())
            .unwrap_or_default();
        let wanted = overrides
            .logits_output
            .clone()
            .map(|v| (v, "--logits-output".to_string()))
            .or_else(|| {
                file.logits_output.as_ref().map(|v| {
                    let text = match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (text, format!("{file_name}: logits-output"))
                })
            });
        let logits_output = match wanted {
            Some((text, what)) => match text.parse::<usize>() {
                Ok(i) if i < outputs.len() => i,
                _ => outputs.iter().position(|o| *o == text).ok_or_else(|| {
                    invalid(format!(
                        "{what} {text}: the model has outputs {outputs:?} (give a name or an index below {})",
                        outputs.len()
                    ))
                })?,
            },
            None => outputs.iter().position(|o| o == "logits").unwrap_or(0),
        };
        if outputs.is_empty() {
            return Err(invalid(format!(
                "{}: the model has no output",
                path.display()
            )));
        }
        Ok(Self {
            input,
            normalization,
            channel_order: overrides
                .channel_order
                .or(file.channel_order)
                .unwrap_or_default(),
            logits_name: outputs[logits_output].clone(),
            logits_output,
        })
    }

    /// What the engines need to load the model this way.
    pub fn model_io(&self) -> super::ModelIo {
        super::ModelIo {
            input: Some(self.input),
            logits: Some(self.logits_output),
        }
    }

    /// The images `picks` of `ds`, prepared for the model: `[n, c, h, w]` f32 (resized
    /// bilinearly when the sizes differ, gray replicated to three channels, channels reordered,
    /// normalised).
    pub fn images(&self, ds: &Dataset, picks: &[usize]) -> Result<Vec<f32>, PreprocessError> {
        let norm = self.normalization.as_ref().ok_or_else(|| {
            PreprocessError::Invalid(
                "the model has no normalisation metadata: give --mean and --std (or a --preprocess file), or --checkpoint for a distill-edge model".into(),
            )
        })?;
        let [c, h, w] = self.input;
        let s = ds.shape;
        if s.channels != c && !(s.channels == 1 && c == 3) {
            return Err(PreprocessError::Invalid(format!(
                "{}: images have {} channels, the model expects {c}",
                ds.name, s.channels
            )));
        }
        let mut out = Vec::with_capacity(picks.len() * c * h * w);
        for &i in picks {
            let image = ds.image(i);
            for ch in 0..c {
                let src_ch = if s.channels == 1 {
                    0
                } else {
                    match self.channel_order {
                        ChannelOrder::Rgb => ch,
                        ChannelOrder::Bgr => c - 1 - ch,
                    }
                };
                let plane = &image[src_ch * s.height * s.width..(src_ch + 1) * s.height * s.width];
                let (m, sd) = (norm.mean[ch], norm.std[ch]);
                resize_into(plane, s.height, s.width, h, w, |v| {
                    out.push((v / 255.0 - m) / sd)
                });
            }
        }
        Ok(out)
    }

    /// `n` seeded random inputs: images of uniformly random pixels, prepared like dataset
    /// images (normalised when a normalisation is known, else the pixels scaled to `[0, 1]`).
    pub fn random_inputs(&self, n: usize, seed: u64) -> Vec<f32> {
        let [c, h, w] = self.input;
        let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            // SplitMix64.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut out = Vec::with_capacity(n * c * h * w);
        for _ in 0..n {
            for ch in 0..c {
                let (m, sd) = self
                    .normalization
                    .as_ref()
                    .map_or((0.0, 1.0), |nz| (nz.mean[ch], nz.std[ch]));
                for _ in 0..h * w {
                    let pixel = (next() >> 56) as f32 / 255.0;
                    out.push((pixel - m) / sd);
                }
            }
        }
        out
    }
}

/// Bilinear resize (half-pixel centres) of one `sh x sw` plane to `dh x dw`, each value
/// passed to `push` in row-major order; a copy when the sizes agree.
fn resize_into(
    plane: &[u8],
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    mut push: impl FnMut(f32),
) {
    if (sh, sw) == (dh, dw) {
        plane.iter().for_each(|&v| push(v as f32));
        return;
    }
    let coord = |d: usize, src: usize, dst: usize| {
        let x = ((d as f32 + 0.5) * src as f32 / dst as f32 - 0.5).clamp(0.0, (src - 1) as f32);
        let i = x.floor() as usize;
        (i, (i + 1).min(src - 1), x - i as f32)
    };
    for y in 0..dh {
        let (y0, y1, fy) = coord(y, sh, dh);
        for x in 0..dw {
            let (x0, x1, fx) = coord(x, sw, dw);
            let p = |yy: usize, xx: usize| plane[yy * sw + xx] as f32;
            let top = p(y0, x0) * (1.0 - fx) + p(y0, x1) * fx;
            let bottom = p(y1, x0) * (1.0 - fx) + p(y1, x1) * fx;
            push(top * (1.0 - fy) + bottom * fy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_bad_ones_name_the_flag() {
        assert_eq!(parse_size("3x224x224", "--input-size"), Ok([3, 224, 224]));
        let e = parse_size("3x224", "--input-size").unwrap_err();
        assert!(e.starts_with("--input-size \"3x224\""), "{e}");
        assert!(parse_size("0x2x2", "x").is_err());
    }

    #[test]
    fn resize_is_a_copy_at_the_same_size_and_averages_when_halving() {
        let plane = [0u8, 100, 200, 50];
        let mut same = vec![];
        resize_into(&plane, 2, 2, 2, 2, |v| same.push(v));
        assert_eq!(same, [0.0, 100.0, 200.0, 50.0]);
        let mut one = vec![];
        resize_into(&plane, 2, 2, 1, 1, |v| one.push(v));
        assert_eq!(one, [87.5]);
    }

    #[test]
    fn random_inputs_are_seeded() {
        let p = Preprocess {
            input: [3, 4, 4],
            normalization: None,
            channel_order: ChannelOrder::Rgb,
            logits_output: 0,
            logits_name: "y".into(),
        };
        let a = p.random_inputs(2, 7);
        assert_eq!(a.len(), 96);
        assert_eq!(a, p.random_inputs(2, 7));
        assert_ne!(a, p.random_inputs(2, 8));
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn bgr_reverses_the_channels_and_normalises_in_the_models_order() {
        let ds = Dataset {
            name: "t".into(),
            shape: crate::data::ImageShape {
                channels: 3,
                height: 1,
                width: 1,
            },
            images: vec![255, 0, 51],
            labels: vec![0],
            classes: vec!["a".into()],
        };
        let p = Preprocess {
            input: [3, 1, 1],
            normalization: Some(Normalization {
                mean: vec![0.0, 0.0, 1.0],
                std: vec![1.0, 1.0, 0.5],
            }),
            channel_order: ChannelOrder::Bgr,
            logits_output: 0,
            logits_name: "y".into(),
        };
        let v = p.images(&ds, &[0]).unwrap();
        assert!(
            (v[0] - 0.2).abs() < 1e-6 && v[1] == 0.0 && v[2] == 0.0,
            "{v:?}"
        );
    }
}
