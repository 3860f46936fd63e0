//! Writing a dataset out as an image folder (`root/train/<class>/*.png`, `root/test/...`):
//! any loaded source, resized to a square side, gray or RGB, optionally colourised. This is
//! how a folder dataset of 96x96 RGB images for the MobileNet-style students is made from
//! Fashion-MNIST or from generated data (`distill-edge data make`).
//!
//! Class folders are named `<index>-<slug>` (`00-t-shirt-top`, `01-trouser`, …): the folder
//! loader sorts classes by name, so the index keeps the labels of the source, and the slug
//! (lower-case letters and digits, anything else a `-`) is a valid file name whatever the
//! source's class names hold. Images are `<split index>.png`, PNG so nothing is lost.
//!
//! **Colourising** a gray source for RGB output multiplies each image by its own colour,
//! drawn per image from (seed, split, index): colour carries no class information, so a
//! model still has to learn the shapes. The output is written into a temporary folder beside
//! the destination and renamed into place when complete; an existing destination is refused,
//! never overwritten.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{GrayImage, ImageFormat, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;

use super::synthetic::mix_seed;
use super::{DataError, Dataset, ImageShape, Splits};

/// How to write the folder.
#[derive(Clone, Debug)]
pub struct FolderOptions {
    /// Output height and width.
    pub side: usize,
    /// Output channels: 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Training images to write (balanced over the classes); `None` = all.
    pub train: Option<usize>,
    /// Test images to write; `None` = all.
    pub test: Option<usize>,
    /// Tint each image of a gray source with its own colour (RGB output only).
    pub colourise: bool,
    /// Seed of the colours.
    pub seed: u64,
}

/// What was written.
#[derive(Clone, Debug, Serialize)]
pub struct FolderSummary {
    /// The folder.
    pub path: PathBuf,
    /// Image shape, channels first.
    pub shape: ImageShape,
    /// Class folder names, index = label.
    pub classes: Vec<String>,
    /// Training images written.
    pub train: usize,
    /// Test images written.
    pub test: usize,
}

/// `T-shirt/top` -> `t-shirt-top`.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Class folder names: `<index>-<slug>`, the index zero-padded so they sort in label order.
pub fn class_folder_names(classes: &[String]) -> Vec<String> {
    let digits = classes.len().saturating_sub(1).to_string().len().max(2);
    classes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let s = slug(c);
            if s.is_empty() {
                format!("{i:0digits$}")
            } else {
                format!("{i:0digits$}-{s}")
            }
        })
        .collect()
}

/// `n` indices of `labels` (all when `n` is `None` or >= their number), balanced over the
/// classes: round-robin over the classes, each class's images in order. Sorted.
fn picks(labels: &[u16], n: Option<usize>) -> Vec<usize> {
    let len = labels.len();
    let n = n.unwrap_or(len).min(len);
    if n == len {
        return (0..len).collect();
    }
    let classes = labels
        .iter()
        .map(|&l| usize::from(l) + 1)
        .max()
        .unwrap_or(0);
    let mut lists = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        lists[usize::from(l)].push(i);
    }
    let mut out = Vec::with_capacity(n);
    let mut round = 0;
    while out.len() < n {
        for list in &lists {
            if let Some(&i) = list.get(round) {
                out.push(i);
                if out.len() == n {
                    break;
                }
            }
        }
        round += 1;
    }
    out.sort_unstable();
    out
}

/// One image of `ds`, converted, resized and tinted.
fn render(ds: &Dataset, i: usize, opts: &FolderOptions, split: u64) -> Result<Vec<u8>, String> {
    let s = ds.shape;
    let src = ds.image(i);
    let plane = s.plane();
    let (w, h) = (s.width as u32, s.height as u32);
    let side = opts.side as u32;
    // Source as RGB (or gray) HWC.
    let rgb: RgbImage = match s.channels {
        1 => {
            let gray = GrayImage::from_raw(w, h, src.to_vec()).ok_or("image size")?;
            image::DynamicImage::ImageLuma8(gray).to_rgb8()
        }
        3 => {
            let mut hwc = Vec::with_capacity(3 * plane);
            for p in 0..plane {
                hwc.extend([src[p], src[plane + p], src[2 * plane + p]]);
            }
            RgbImage::from_raw(w, h, hwc).ok_or("image size")?
        }
        c => return Err(format!("{c} channels: expected 1 (gray) or 3 (RGB)")),
    };
    let mut rgb = if (w, h) == (side, side) {
        rgb
    } else {
        image::imageops::resize(&rgb, side, side, FilterType::Triangle)
    };
    if opts.colourise && s.channels == 1 && opts.channels == 3 {
        let mut rng = StdRng::seed_from_u64(mix_seed(mix_seed(opts.seed, split), i as u64));
        let tint: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.25f32..=1.0));
        for px in rgb.pixels_mut() {
            for (v, t) in px.0.iter_mut().zip(tint) {
                *v = (f32::from(*v) * t).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    let mut png = std::io::Cursor::new(Vec::new());
    let written = if opts.channels == 1 {
        image::DynamicImage::ImageRgb8(rgb)
            .to_luma8()
            .write_to(&mut png, ImageFormat::Png)
    } else {
        rgb.write_to(&mut png, ImageFormat::Png)
    };
    written.map_err(|e| e.to_string())?;
    Ok(png.into_inner())
}

/// Writes `splits` as an image folder at `out` (which must not exist yet); `done` is called
/// with the number of images written so far (for a progress bar).
pub fn write_folder(
    splits: &Splits,
    out: &Path,
    opts: &FolderOptions,
    done: &(dyn Fn(usize) + Sync),
) -> Result<FolderSummary, DataError> {
    if opts.channels != 1 && opts.channels != 3 {
        return Err(DataError::invalid(
            out,
            format!(
                "{} output channels: expected 1 (gray) or 3 (RGB)",
                opts.channels
            ),
        ));
    }
    if opts.side == 0 || opts.side > 4096 {
        return Err(DataError::invalid(
            out,
            format!("image side {}: expected 1 to 4096 pixels", opts.side),
        ));
    }
    if out.exists() {
        return Err(DataError::invalid(
            out,
            "already exists: choose a new folder (an existing one is never overwritten)",
        ));
    }
    let names = class_folder_names(&splits.train.classes);
    let tmp = crate::fsutil::sibling_temp_dir(out).map_err(|e| DataError::io(out, e))?;
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let mut counts = [0usize; 2];
    for (k, (split, ds, n)) in [
        ("train", &splits.train, opts.train),
        ("test", &splits.test, opts.test),
    ]
    .into_iter()
    .enumerate()
    {
        let chosen = picks(&ds.labels, n);
        let dir = tmp.path().join(split);
        for name in &names {
            std::fs::create_dir_all(dir.join(name)).map_err(|e| DataError::io(&dir, e))?;
        }
        chosen.par_iter().try_for_each(|&i| {
            let label = usize::from(ds.labels[i]);
            let path = dir.join(&names[label]).join(format!("{i:06}.png"));
            let bytes = render(ds, i, opts, k as u64)
                .map_err(|m| DataError::invalid(&path, format!("{} image {i}: {m}", ds.name)))?;
            std::fs::write(&path, bytes).map_err(|e| DataError::io(&path, e))?;
            done(counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
            Ok::<_, DataError>(())
        })?;
        // A class without images would make the folder unloadable: drop its empty folder
        // from test/ (test may hold a subset), refuse it in train/.
        for name in &names {
            let class_dir = dir.join(name);
            let empty = std::fs::read_dir(&class_dir)
                .map_err(|e| DataError::io(&class_dir, e))?
                .next()
                .is_none();
            if empty {
                if split == "train" {
                    return Err(DataError::invalid(
                        out,
                        format!(
                            "class '{name}' gets no training image: write more training images (--train)"
                        ),
                    ));
                }
                std::fs::remove_dir(&class_dir).map_err(|e| DataError::io(&class_dir, e))?;
            }
        }
        counts[k] = chosen.len();
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, out).map_err(|e| {
        let _ = std::fs::remove_dir_all(&kept);
        DataError::io(out, e)
    })?;
    Ok(FolderSummary {
        path: out.to_path_buf(),
        shape: ImageShape::new(opts.channels, opts.side, opts.side),
        classes: names,
        train: counts[0],
        test: counts[1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray_splits() -> Splits {
        let ds = |n: usize| Dataset {
            name: "g".into(),
            shape: ImageShape::new(1, 4, 4),
            images: (0..n * 16).map(|i| (i * 37 % 256) as u8).collect(),
            labels: (0..n).map(|i| (i % 3) as u16).collect(),
            classes: vec!["T-shirt/top".into(), "Bag".into(), "".into()],
        };
        Splits {
            train: ds(12),
            test: ds(6),
        }
    }

    #[test]
    fn class_names_are_slugged_and_sort_in_label_order() {
        let names = class_folder_names(&["T-shirt/top".into(), "Bag".into(), "??".into()]);
        assert_eq!(names, ["00-t-shirt-top", "01-bag", "02"]);
        let many: Vec<String> = (0..120).map(|i| format!("c{i}")).collect();
        let names = class_folder_names(&many);
        assert_eq!(names[7], "007-c7");
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
    }

    /// The written folder loads back with the labels, the shape and the pixels (resized by
    /// the same filter) of the source.
    #[test]
    fn a_written_folder_loads_back_with_the_same_labels() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("rgb96");
        let splits = gray_splits();
        let opts = FolderOptions {
            side: 9,
            channels: 3,
            train: Some(6),
            test: None,
            colourise: true,
            seed: 1,
        };
        let summary = write_folder(&splits, &out, &opts, &|_| {}).unwrap();
        assert_eq!((summary.train, summary.test), (6, 6));
        let back = super::super::folder::load(&out, ImageShape::new(3, 9, 9)).unwrap();
        assert_eq!(back.train.classes, summary.classes);
        // picks 0..6 (two per class) of labels i % 3
        assert_eq!(back.train.labels, [0, 0, 1, 1, 2, 2]);
        assert_eq!(back.test.len(), 6);
        // Colourised: the channels of one image differ.
        let img = back.train.image(1);
        assert_ne!(&img[..81], &img[81..162]);
        // An existing folder is refused and left as it was.
        let err = write_folder(&splits, &out, &opts, &|_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("already exists"), "{err}");
        assert!(out.join("train").is_dir());
        // Without colour, gray in = the same value in every channel.
        let plain = dir.path().join("plain");
        let opts = FolderOptions {
            colourise: false,
            side: 4,
            ..opts
        };
        write_folder(&splits, &plain, &opts, &|_| {}).unwrap();
        let back = super::super::folder::load(&plain, ImageShape::new(3, 4, 4)).unwrap();
        assert_eq!(&back.train.image(0)[..16], splits.train.image(0));
        assert_eq!(&back.train.image(0)[16..32], splits.train.image(0));
    }

    #[test]
    fn too_few_training_images_for_every_class_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x");
        let opts = FolderOptions {
            side: 8,
            channels: 1,
            train: Some(1),
            test: Some(1),
            colourise: false,
            seed: 0,
        };
        let err = write_folder(&gray_splits(), &out, &opts, &|_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("gets no training image"), "{err}");
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
