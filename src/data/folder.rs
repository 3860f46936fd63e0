//! Image folders: `root/train/<class>/*.png|jpg|jpeg` and `root/test/<class>/...`.
//!
//! The classes are the sorted names of the sub-folders of `train/` (hidden ones,
//! starting with `.`, are skipped); `test/` may hold a subset of them but no
//! other class. Image files are picked by extension (`png`, `jpg`, `jpeg`, any
//! case), other files are ignored; each is decoded, converted to gray (1
//! channel) or RGB (3 channels), resized to the requested shape with a
//! triangle filter and stored CHW. Images are decoded in parallel.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use super::{DataError, Dataset, ImageShape, Splits};

const LAYOUT_HINT: &str =
    "expected root/train/<class>/*.png|jpg|jpeg and root/test/<class>/*.png|jpg|jpeg";

/// Default channels of a folder dataset (RGB).
pub fn default_channels() -> usize {
    3
}

/// Default height and width of a folder dataset.
pub fn default_side() -> usize {
    32
}

/// True when `path` has a PNG or JPEG extension (any case).
pub fn is_image_file(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["png", "jpg", "jpeg"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |e| DataError::io(dir, e);
    let mut entries = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort();
    Ok(entries)
}

/// Sorted (name, path) of the non-hidden sub-folders of `dir`.
fn class_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut out = Vec::new();
    for p in read_dir_sorted(dir)? {
        if !p.is_dir() {
            continue;
        }
        let Some(name) = p.file_name().and_then(|n| n.to_str()).map(String::from) else {
            return Err(DataError::invalid(
                &p,
                "class folder name is not valid UTF-8",
            ));
        };
        if !name.starts_with('.') {
            out.push((name, p));
        }
    }
    if out.is_empty() {
        return Err(DataError::invalid(
            dir,
            format!("no class sub-folders; {LAYOUT_HINT}"),
        ));
    }
    Ok(out)
}

/// Image files of one split with their labels, in class then file-name order.
fn list_split(dir: &Path, classes: &[String]) -> Result<Vec<(PathBuf, u16)>, DataError> {
    let mut files = Vec::new();
    for (name, path) in class_dirs(dir)? {
        let Some(label) = classes.iter().position(|c| *c == name) else {
            return Err(DataError::invalid(
                &path,
                format!(
                    "class '{name}' is not among the training classes [{}]",
                    classes.join(", ")
                ),
            ));
        };
        let before = files.len();
        for f in read_dir_sorted(&path)? {
            if f.is_file() && is_image_file(&f) {
                files.push((f, label as u16));
            }
        }
        if files.len() == before {
            return Err(DataError::invalid(
                &path,
                "empty class folder: no .png, .jpg or .jpeg images",
            ));
        }
    }
    Ok(files)
}

/// Decodes `path`, converts it to `shape.channels` channels, resizes it to
/// `shape.height` x `shape.width` and writes it CHW into `out`.
///
/// # Panics
/// If `out.len() != shape.len()`.
pub fn decode_into(path: &Path, shape: ImageShape, out: &mut [u8]) -> Result<(), DataError> {
    let img = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?
        .decode()
        .map_err(|source| DataError::Image {
            path: path.to_path_buf(),
            source,
        })?;
    let (w, h) = (shape.width as u32, shape.height as u32);
    match shape.channels {
        1 => {
            let mut gray = img.to_luma8();
            if gray.dimensions() != (w, h) {
                gray = image::imageops::resize(&gray, w, h, FilterType::Triangle);
            }
            out.copy_from_slice(gray.as_raw());
        }
        3 => {
            let mut rgb = img.to_rgb8();
            if rgb.dimensions() != (w, h) {
                rgb = image::imageops::resize(&rgb, w, h, FilterType::Triangle);
            }
            let plane = shape.plane();
            // HWC (interleaved) to CHW (planar).
            for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
                out[i] = px[0];
                out[plane + i] = px[1];
                out[2 * plane + i] = px[2];
            }
        }
        _ => {
            return Err(DataError::invalid(
                path,
                format!("cannot convert to {shape}: expected 1 channel (gray) or 3 channels (RGB)"),
            ));
        }
    }
    Ok(())
}

fn load_split(
    dir: &Path,
    split: &str,
    classes: &[String],
    shape: ImageShape,
) -> Result<Dataset, DataError> {
    let files = list_split(dir, classes)?;
    let mut images = vec![0u8; files.len() * shape.len()];
    let results: Vec<Result<(), DataError>> = images
        .par_chunks_mut(shape.len())
        .zip(files.par_iter())
        .map(|(out, (path, _))| decode_into(path, shape, out))
        .collect();
    // Report the first failure in file order, whatever the thread timing.
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(Dataset {
        name: format!("folder/{split}"),
        shape,
        images,
        labels: files.iter().map(|&(_, l)| l).collect(),
        classes: classes.to_vec(),
    })
}

/// Loads `root/train` and `root/test`, every image converted and resized to
/// `shape` (1 or 3 channels, both sides > 0 and < 65536).
///
/// Errors: `train/` or `test/` missing, no class sub-folders, a class folder
/// without images, a test class unknown to train, an undecodable image (named),
/// or an unsupported shape.
pub fn load(root: &Path, shape: ImageShape) -> Result<Splits, DataError> {
    if shape.channels != 1 && shape.channels != 3 {
        return Err(DataError::invalid(
            root,
            format!(
                "unsupported input shape {shape}: expected 1 channel (gray) or 3 channels (RGB)"
            ),
        ));
    }
    if shape.height == 0 || shape.width == 0 || shape.height > 65535 || shape.width > 65535 {
        return Err(DataError::invalid(
            root,
            format!("unsupported input shape {shape}: expected sides from 1 to 65535"),
        ));
    }
    let train_dir = root.join("train");
    let test_dir = root.join("test");
    for d in [&train_dir, &test_dir] {
        if !d.is_dir() {
            return Err(DataError::Missing {
                path: d.clone(),
                hint: LAYOUT_HINT.into(),
            });
        }
    }
    let classes: Vec<String> = class_dirs(&train_dir)?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    if classes.len() > usize::from(u16::MAX) {
        return Err(DataError::invalid(
            &train_dir,
            format!("{} classes, expected at most 65535", classes.len()),
        ));
    }
    Ok(Splits {
        train: load_split(&train_dir, "train", &classes, shape)?,
        test: load_split(&test_dir, "test", &classes, shape)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgb, RgbImage};

    /// A solid-colour RGB image saved as `format`.
    fn save(path: &Path, w: u32, h: u32, rgb: [u8; 3], format: ImageFormat) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_pixel(w, h, Rgb(rgb))
            .save_with_format(path, format)
            .unwrap();
    }

    /// train: cat (png 10x12, JPG 20x16), dog (jpeg 5x5); test: dog (png 8x8);
    /// plus files that must be ignored.
    fn make_tree(root: &Path) {
        save(
            &root.join("train/cat/a.png"),
            10,
            12,
            [200, 0, 0],
            ImageFormat::Png,
        );
        save(
            &root.join("train/cat/b.JPG"),
            20,
            16,
            [0, 200, 0],
            ImageFormat::Jpeg,
        );
        save(
            &root.join("train/dog/c.jpeg"),
            5,
            5,
            [0, 0, 200],
            ImageFormat::Jpeg,
        );
        save(
            &root.join("test/dog/d.png"),
            8,
            8,
            [10, 20, 30],
            ImageFormat::Png,
        );
        std::fs::write(root.join("train/cat/notes.txt"), "ignored").unwrap();
        std::fs::write(root.join("train/readme.md"), "ignored").unwrap();
        std::fs::create_dir_all(root.join("train/.hidden")).unwrap();
    }

    fn err_of(r: Result<impl std::fmt::Debug, DataError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn loads_and_resizes_rgb() {
        let dir = tempfile::tempdir().unwrap();
        make_tree(dir.path());
        let shape = ImageShape::new(3, 6, 7);
        let s = load(dir.path(), shape).unwrap();
        assert_eq!(s.train.classes, vec!["cat", "dog"]);
        assert_eq!(s.train.labels, vec![0, 0, 1]);
        assert_eq!(s.test.labels, vec![1]);
        assert_eq!(s.train.shape, shape);
        assert_eq!(s.train.images.len(), 3 * shape.len());
        assert_eq!(s.train.name, "folder/train");
        // solid colours survive resizing; CHW planes hold one colour each
        let a = s.train.image(0);
        assert!(a[..42].iter().all(|&v| v == 200), "{a:?}");
        assert!(a[42..].iter().all(|&v| v == 0), "{a:?}");
        let b = s.train.image(1); // JPEG: allow compression error
        assert!(b[..42].iter().all(|&v| v < 12), "{b:?}");
        assert!(b[42..84].iter().all(|&v| v.abs_diff(200) < 12), "{b:?}");
        let d = s.test.image(0);
        assert_eq!(&d[..42], &[10; 42]);
        assert_eq!(&d[42..84], &[20; 42]);
        assert_eq!(&d[84..], &[30; 42]);
        s.train.validate().unwrap();
    }

    #[test]
    fn loads_gray() {
        let dir = tempfile::tempdir().unwrap();
        make_tree(dir.path());
        let s = load(dir.path(), ImageShape::new(1, 9, 9)).unwrap();
        assert_eq!(s.train.images.len(), 3 * 81);
        // luma of pure red 200: 0.2126 * 200 ~ 43 (image uses Rec. 709 weights)
        let v = s.train.image(0)[0];
        assert!(s.train.image(0).iter().all(|&x| x == v));
        assert!((35..=65).contains(&v), "{v}");
        assert_eq!(s.test.len(), 1);
    }

    #[test]
    fn missing_train_or_test() {
        let dir = tempfile::tempdir().unwrap();
        let msg = err_of(load(dir.path(), ImageShape::new(1, 8, 8)));
        assert!(msg.contains("train: not found"), "{msg}");
        assert!(msg.contains("root/train/<class>"), "{msg}");
        save(
            &dir.path().join("train/a/x.png"),
            2,
            2,
            [0; 3],
            ImageFormat::Png,
        );
        let msg = err_of(load(dir.path(), ImageShape::new(1, 8, 8)));
        assert!(msg.contains("test: not found"), "{msg}");
    }

    #[test]
    fn no_classes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("train")).unwrap();
        std::fs::create_dir_all(dir.path().join("test")).unwrap();
        let msg = err_of(load(dir.path(), ImageShape::new(1, 8, 8)));
        assert!(msg.contains("train: no class sub-folders"), "{msg}");
    }

    #[test]
    fn empty_class_folder() {
        let dir = tempfile::tempdir().unwrap();
        make_tree(dir.path());
        std::fs::create_dir_all(dir.path().join("train/emu")).unwrap();
        std::fs::write(dir.path().join("train/emu/x.gif"), "GIF89a").unwrap();
        let msg = err_of(load(dir.path(), ImageShape::new(1, 8, 8)));
        assert!(msg.contains("emu: empty class folder"), "{msg}");
    }

    #[test]
    fn unknown_test_class() {
        let dir = tempfile::tempdir().unwrap();
        make_tree(dir.path());
        save(
            &dir.path().join("test/cow/x.png"),
            2,
            2,
            [0; 3],
            ImageFormat::Png,
        );
        let msg = err_of(load(dir.path(), ImageShape::new(1, 8, 8)));
        assert!(
            msg.contains("cow: class 'cow' is not among the training classes [cat, dog]"),
            "{msg}"
        );
    }

    #[test]
    fn undecodable_image() {
        let dir = tempfile::tempdir().unwrap();
        make_tree(dir.path());
        let bad = dir.path().join("train/dog/broken.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let msg = err_of(load(dir.path(), ImageShape::new(1, 8, 8)));
        assert!(msg.starts_with(&bad.display().to_string()), "{msg}");
        assert!(msg.contains("cannot decode image"), "{msg}");
    }

    #[test]
    fn unsupported_channels() {
        let dir = tempfile::tempdir().unwrap();
        make_tree(dir.path());
        let msg = err_of(load(dir.path(), ImageShape::new(2, 8, 8)));
        assert!(msg.contains("unsupported input shape 2x8x8"), "{msg}");
        assert!(err_of(load(dir.path(), ImageShape::new(1, 0, 8))).contains("sides"));
    }

    #[test]
    fn image_extension_filter() {
        assert!(is_image_file(Path::new("a/b.PNG")));
        assert!(is_image_file(Path::new("b.Jpeg")));
        assert!(!is_image_file(Path::new("b.gif")));
        assert!(!is_image_file(Path::new("png")));
    }
}
