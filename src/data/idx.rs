//! The IDX format of MNIST and Fashion-MNIST, gzipped or raw.
//!
//! A folder holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each optionally with
//! a `.gz` suffix. Files start with a big-endian header: a magic number
//! (`0x00000803` for unsigned-byte images with 3 dimensions, `0x00000801` for
//! unsigned-byte labels with 1 dimension) and one `u32` per dimension.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use super::{DataError, Dataset, ImageShape, Splits};

/// Magic number of an IDX file of unsigned-byte images (3 dimensions).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte labels (1 dimension).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// How to install Fashion-MNIST, shown when its files are missing.
pub const FASHION_MNIST_HINT: &str =
    "install it with `apt-get install dataset-fashion-mnist` or run scripts/setup.sh";
/// How to get MNIST, shown when its files are missing.
pub const MNIST_HINT: &str = "download the four MNIST IDX files (train-images-idx3-ubyte.gz, \
     train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) into it";

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads a whole file, transparently decompressing it when it starts with the
/// gzip magic bytes `1f 8b` (whatever its extension).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| DataError::invalid(path, format!("corrupt gzip data: {e}")))?;
    Ok(out)
}

/// Splits off and checks an IDX header: `magic` then `dims` big-endian `u32`s.
fn parse_header(
    path: &Path,
    data: &[u8],
    magic: u32,
    what: &str,
    dims: usize,
) -> Result<Vec<usize>, DataError> {
    let header = 4 + 4 * dims;
    let be = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    if data.len() < 4 {
        return Err(DataError::invalid(
            path,
            format!(
                "truncated: {} bytes, expected an IDX header of {header} bytes ({what})",
                data.len()
            ),
        ));
    }
    let found = be(0);
    if found != magic {
        return Err(DataError::invalid(
            path,
            format!("bad magic {found:#010x}, expected {magic:#010x} ({what})"),
        ));
    }
    if data.len() < header {
        return Err(DataError::invalid(
            path,
            format!(
                "truncated: {} bytes, expected an IDX header of {header} bytes ({what})",
                data.len()
            ),
        ));
    }
    Ok((0..dims).map(|d| be(4 + 4 * d) as usize).collect())
}

/// Checks that `body` holds exactly `expected` bytes of `what`.
fn check_body_len(path: &Path, found: usize, expected: usize, what: &str) -> Result<(), DataError> {
    if found < expected {
        return Err(DataError::invalid(
            path,
            format!("truncated: expected {expected} bytes of {what}, found {found}"),
        ));
    }
    if found > expected {
        return Err(DataError::invalid(
            path,
            format!(
                "trailing garbage: {} bytes after the {expected} bytes of {what}",
                found - expected
            ),
        ));
    }
    Ok(())
}

/// Reads an IDX images file (gzipped or raw): returns the shape of one image
/// (always 1 channel), the number of images and their pixels, image after image.
///
/// Errors on a bad magic, a truncated header or body, trailing bytes, zero
/// images, zero-sized images and corrupt gzip data; each names the file.
pub fn read_images(path: &Path) -> Result<(ImageShape, usize, Vec<u8>), DataError> {
    let mut data = read_maybe_gz(path)?;
    let what = "IDX unsigned-byte images";
    let dims = parse_header(path, &data, IMAGES_MAGIC, what, 3)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if n == 0 {
        return Err(DataError::invalid(path, "contains zero images"));
    }
    if rows == 0 || cols == 0 {
        return Err(DataError::invalid(
            path,
            format!("images of {rows}x{cols} pixels, expected both sides > 0"),
        ));
    }
    let expected = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| {
            DataError::invalid(
                path,
                format!("header claims {n} images of {rows}x{cols}, too large"),
            )
        })?;
    let body = data.len() - 16;
    check_body_len(
        path,
        body,
        expected,
        &format!("pixel data ({n} images of {rows}x{cols})"),
    )?;
    data.drain(..16);
    Ok((ImageShape::new(1, rows, cols), n, data))
}

/// Reads an IDX labels file (gzipped or raw) and returns its labels.
///
/// Errors on a bad magic, a truncated header or body, trailing bytes, zero
/// labels and corrupt gzip data; each names the file. Ranges are checked by
/// the caller, which knows the number of classes.
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut data = read_maybe_gz(path)?;
    let dims = parse_header(path, &data, LABELS_MAGIC, "IDX unsigned-byte labels", 1)?;
    let n = dims[0];
    if n == 0 {
        return Err(DataError::invalid(path, "contains zero labels"));
    }
    check_body_len(path, data.len() - 8, n, &format!("label data ({n} labels)"))?;
    data.drain(..8);
    Ok(data)
}

fn write_file(path: &Path, bytes: &[u8], gzip: bool) -> Result<(), DataError> {
    let io = |e| DataError::io(path, e);
    if gzip {
        let file = std::fs::File::create(path).map_err(io)?;
        let mut enc = GzEncoder::new(std::io::BufWriter::new(file), Compression::fast());
        enc.write_all(bytes).map_err(io)?;
        enc.finish().map_err(io)?.flush().map_err(io)
    } else {
        std::fs::write(path, bytes).map_err(io)
    }
}

/// A header dimension, which IDX stores as a `u32`.
fn header_u32(path: &Path, v: usize) -> Result<u32, DataError> {
    u32::try_from(v).map_err(|_| {
        DataError::invalid(
            path,
            format!("dimension {v} does not fit an IDX header (u32)"),
        )
    })
}

/// Writes an IDX images file (gzipped when `gzip`) holding the images in
/// `pixels`, each of `shape`; `shape.channels` must be 1 and `pixels.len()` a
/// multiple of `shape.len()`. Used by tests to make small files.
pub fn write_images(
    path: &Path,
    shape: ImageShape,
    pixels: &[u8],
    gzip: bool,
) -> Result<(), DataError> {
    if shape.channels != 1 || shape.is_empty() || !pixels.len().is_multiple_of(shape.len()) {
        return Err(DataError::invalid(
            path,
            format!(
                "cannot write {} bytes as IDX images of {shape}: expected 1 channel and a whole number of images",
                pixels.len()
            ),
        ));
    }
    let n = pixels.len() / shape.len();
    let mut bytes = Vec::with_capacity(16 + pixels.len());
    bytes.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
    for v in [n, shape.height, shape.width] {
        bytes.extend_from_slice(&header_u32(path, v)?.to_be_bytes());
    }
    bytes.extend_from_slice(pixels);
    write_file(path, &bytes, gzip)
}

/// Writes an IDX labels file (gzipped when `gzip`) holding `labels`. Used by
/// tests to make small files.
pub fn write_labels(path: &Path, labels: &[u8], gzip: bool) -> Result<(), DataError> {
    let mut bytes = Vec::with_capacity(8 + labels.len());
    bytes.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    bytes.extend_from_slice(&header_u32(path, labels.len())?.to_be_bytes());
    bytes.extend_from_slice(labels);
    write_file(path, &bytes, gzip)
}

/// Finds `dir/<stem>.gz`, else `dir/<stem>`; the error says which names were
/// looked for and adds `hint`.
pub fn find_file(dir: &Path, stem: &str, hint: &str) -> Result<PathBuf, DataError> {
    let gz = dir.join(format!("{stem}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let raw = dir.join(stem);
    if raw.is_file() {
        return Ok(raw);
    }
    // A directory where the file is expected is not "missing": say what is there.
    if let Some(d) = [&gz, &raw].into_iter().find(|p| p.is_dir()) {
        return Err(DataError::invalid(
            d.as_path(),
            format!("is a directory; expected an IDX file ({hint})"),
        ));
    }
    Err(DataError::Missing {
        path: gz,
        hint: format!(
            "looked for {stem}.gz and {stem} in {}; {hint}",
            dir.display()
        ),
    })
}

/// Loads one split: `prefix` is `train` or `t10k`. The set is named
/// `<name>/<split>` with split `train` or `test`.
pub fn load_split(
    dir: &Path,
    prefix: &str,
    name: &str,
    classes: &[String],
    hint: &str,
) -> Result<Dataset, DataError> {
    let images_path = find_file(dir, &format!("{prefix}-images-idx3-ubyte"), hint)?;
    let labels_path = find_file(dir, &format!("{prefix}-labels-idx1-ubyte"), hint)?;
    let (shape, n, images) = read_images(&images_path)?;
    let raw_labels = read_labels(&labels_path)?;
    if raw_labels.len() != n {
        return Err(DataError::invalid(
            &labels_path,
            format!(
                "holds {} labels but {} holds {n} images; expected one label per image",
                raw_labels.len(),
                images_path.display()
            ),
        ));
    }
    if let Some((i, &l)) = raw_labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| usize::from(l) >= classes.len())
    {
        return Err(DataError::invalid(
            &labels_path,
            format!(
                "label {l} at index {i} is out of range, expected < {}",
                classes.len()
            ),
        ));
    }
    let split = if prefix == "train" { "train" } else { "test" };
    Ok(Dataset {
        name: format!("{name}/{split}"),
        shape,
        images,
        labels: raw_labels.into_iter().map(u16::from).collect(),
        classes: classes.to_vec(),
    })
}

/// Loads the train (`train-*`) and test (`t10k-*`) splits from `dir`.
/// `name` prefixes the sets' names; `hint` is added to missing-file errors.
pub fn load_dir(
    dir: &Path,
    name: &str,
    classes: &[String],
    hint: &str,
) -> Result<Splits, DataError> {
    let train = load_split(dir, "train", name, classes, hint)?;
    let test = load_split(dir, "t10k", name, classes, hint)?;
    if train.shape != test.shape {
        return Err(DataError::invalid(
            dir,
            format!(
                "train images are {} but test images are {}; expected the same shape",
                train.shape, test.shape
            ),
        ));
    }
    Ok(Splits { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataSource, FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, load};

    fn classes() -> Vec<String> {
        (0..10).map(|d| d.to_string()).collect()
    }

    /// Writes a small train/test IDX set into `dir`.
    fn write_set(dir: &Path, gzip: bool) -> (Vec<u8>, Vec<u8>) {
        let shape = ImageShape::new(1, 3, 4);
        let pixels: Vec<u8> = (0..5 * 12).map(|i| (i * 7 % 256) as u8).collect();
        let labels = vec![0, 9, 3, 3, 1];
        let ext = if gzip { ".gz" } else { "" };
        write_images(
            &dir.join(format!("train-images-idx3-ubyte{ext}")),
            shape,
            &pixels,
            gzip,
        )
        .unwrap();
        write_labels(
            &dir.join(format!("train-labels-idx1-ubyte{ext}")),
            &labels,
            gzip,
        )
        .unwrap();
        write_images(
            &dir.join(format!("t10k-images-idx3-ubyte{ext}")),
            shape,
            &pixels[..24],
            gzip,
        )
        .unwrap();
        write_labels(
            &dir.join(format!("t10k-labels-idx1-ubyte{ext}")),
            &labels[..2],
            gzip,
        )
        .unwrap();
        (pixels, labels)
    }

    fn err_of(r: Result<impl std::fmt::Debug, DataError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn round_trip_gzip_and_raw() {
        for gzip in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (pixels, labels) = write_set(dir.path(), gzip);
            let s = load_dir(dir.path(), "mnist", &classes(), MNIST_HINT).unwrap();
            assert_eq!(s.train.name, "mnist/train");
            assert_eq!(s.test.name, "mnist/test");
            assert_eq!(s.train.shape, ImageShape::new(1, 3, 4));
            assert_eq!(s.train.images, pixels);
            assert_eq!(
                s.train.labels,
                labels.iter().map(|&l| u16::from(l)).collect::<Vec<_>>()
            );
            assert_eq!(s.test.len(), 2);
            assert_eq!(s.test.images, &pixels[..24]);
            assert_eq!(s.train.classes, classes());
        }
    }

    #[test]
    fn gzip_detected_by_magic_not_extension() {
        let dir = tempfile::tempdir().unwrap();
        // gzip content under the raw name, raw content under the .gz name
        let p = dir.path().join("train-images-idx3-ubyte");
        write_images(&p, ImageShape::new(1, 2, 2), &[1, 2, 3, 4], true).unwrap();
        assert_eq!(read_images(&p).unwrap().2, vec![1, 2, 3, 4]);
        let q = dir.path().join("train-labels-idx1-ubyte.gz");
        write_labels(&q, &[5, 6], false).unwrap();
        assert_eq!(read_labels(&q).unwrap(), vec![5, 6]);
    }

    #[test]
    fn prefers_gz_then_raw() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("x");
        std::fs::write(&raw, b"").unwrap();
        assert_eq!(find_file(dir.path(), "x", "").unwrap(), raw);
        let gz = dir.path().join("x.gz");
        std::fs::write(&gz, b"").unwrap();
        assert_eq!(find_file(dir.path(), "x", "").unwrap(), gz);
    }

    #[test]
    fn missing_file_names_both_candidates_and_hint() {
        let dir = tempfile::tempdir().unwrap();
        let src = DataSource::FashionMnist {
            path: Some(dir.path().to_path_buf()),
            pad: 0,
        };
        let msg = err_of(load(&src));
        assert!(
            msg.contains("train-images-idx3-ubyte.gz and train-images-idx3-ubyte"),
            "{msg}"
        );
        assert!(
            msg.contains("apt-get install dataset-fashion-mnist"),
            "{msg}"
        );
        assert!(msg.contains("scripts/setup.sh"), "{msg}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");

        // only the test labels are missing
        write_set(dir.path(), true);
        std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte.gz")).unwrap();
        let msg = err_of(load_dir(dir.path(), "mnist", &classes(), MNIST_HINT));
        assert!(msg.contains("t10k-labels-idx1-ubyte"), "{msg}");
        assert!(msg.contains("not found"), "{msg}");
    }

    #[test]
    fn a_directory_where_an_idx_file_is_expected_is_reported_as_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), true);
        let p = dir.path().join("train-images-idx3-ubyte.gz");
        std::fs::remove_file(&p).unwrap();
        std::fs::create_dir(&p).unwrap();
        let msg = err_of(load_dir(dir.path(), "mnist", &classes(), MNIST_HINT));
        assert!(msg.contains("is a directory"), "{msg}");
        assert!(msg.contains("train-images-idx3-ubyte.gz"), "{msg}");
        assert!(!msg.contains("not found"), "{msg}");
    }

    #[test]
    fn bad_magic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train-images-idx3-ubyte.gz");
        // a labels file where images are expected
        write_labels(&p, &[1, 2, 3], true).unwrap();
        let msg = err_of(read_images(&p));
        assert_eq!(
            msg,
            format!(
                "{}: bad magic 0x00000801, expected 0x00000803 (IDX unsigned-byte images)",
                p.display()
            )
        );
        let msg = err_of(read_labels(&dir.path().join("none")));
        assert!(msg.contains("none"), "{msg}");
        let q = dir.path().join("labels");
        write_images(&q, ImageShape::new(1, 1, 1), &[1], false).unwrap();
        let msg = err_of(read_labels(&q));
        assert!(
            msg.contains("bad magic 0x00000803, expected 0x00000801"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_and_trailing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("imgs");
        write_images(&p, ImageShape::new(1, 2, 2), &[0; 12], false).unwrap();
        let full = std::fs::read(&p).unwrap();

        std::fs::write(&p, &full[..full.len() - 5]).unwrap();
        let msg = err_of(read_images(&p));
        assert!(msg.starts_with(&p.display().to_string()), "{msg}");
        assert!(
            msg.contains("truncated: expected 12 bytes of pixel data (3 images of 2x2), found 7"),
            "{msg}"
        );

        std::fs::write(&p, &full[..10]).unwrap();
        let msg = err_of(read_images(&p));
        assert!(
            msg.contains("truncated: 10 bytes, expected an IDX header of 16 bytes"),
            "{msg}"
        );

        std::fs::write(&p, [&full[..], &[1, 2, 3]].concat()).unwrap();
        let msg = err_of(read_images(&p));
        assert!(
            msg.contains("trailing garbage: 3 bytes after the 12 bytes of pixel data"),
            "{msg}"
        );

        let l = dir.path().join("labels");
        write_labels(&l, &[1, 2, 3, 4], false).unwrap();
        let full = std::fs::read(&l).unwrap();
        std::fs::write(&l, &full[..10]).unwrap();
        let msg = err_of(read_labels(&l));
        assert!(
            msg.contains("truncated: expected 4 bytes of label data (4 labels), found 2"),
            "{msg}"
        );
        std::fs::write(&l, [&full[..], &[9]].concat()).unwrap();
        assert!(err_of(read_labels(&l)).contains("trailing garbage: 1 bytes"));
        std::fs::write(&l, &full[..2]).unwrap();
        assert!(err_of(read_labels(&l)).contains("truncated"));
    }

    #[test]
    fn zero_images_and_zero_labels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("imgs.gz");
        write_images(&p, ImageShape::new(1, 2, 2), &[], true).unwrap();
        let msg = err_of(read_images(&p));
        assert_eq!(msg, format!("{}: contains zero images", p.display()));
        let l = dir.path().join("labels.gz");
        write_labels(&l, &[], true).unwrap();
        assert!(err_of(read_labels(&l)).contains("zero labels"));
    }

    #[test]
    fn corrupt_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train-images-idx3-ubyte.gz");
        write_images(&p, ImageShape::new(1, 8, 8), &[7; 640], true).unwrap();
        let full = std::fs::read(&p).unwrap();
        std::fs::write(&p, &full[..full.len() / 2]).unwrap();
        let msg = err_of(read_images(&p));
        assert!(msg.starts_with(&p.display().to_string()), "{msg}");
        assert!(msg.contains("corrupt gzip data"), "{msg}");
        let mut garbled = full.clone();
        for b in &mut garbled[12..20] {
            *b ^= 0x5a;
        }
        std::fs::write(&p, &garbled).unwrap();
        assert!(err_of(read_images(&p)).contains("corrupt gzip data"));
    }

    #[test]
    fn count_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), false);
        let l = dir.path().join("train-labels-idx1-ubyte");
        write_labels(&l, &[1, 2, 3], false).unwrap();
        let msg = err_of(load_dir(dir.path(), "mnist", &classes(), MNIST_HINT));
        assert!(msg.starts_with(&l.display().to_string()), "{msg}");
        assert!(msg.contains("holds 3 labels but"), "{msg}");
        assert!(
            msg.contains("train-images-idx3-ubyte holds 5 images"),
            "{msg}"
        );
    }

    #[test]
    fn label_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), true);
        let l = dir.path().join("t10k-labels-idx1-ubyte.gz");
        write_labels(&l, &[2, 10], true).unwrap();
        let msg = err_of(load_dir(dir.path(), "mnist", &classes(), MNIST_HINT));
        assert_eq!(
            msg,
            format!(
                "{}: label 10 at index 1 is out of range, expected < 10",
                l.display()
            )
        );
    }

    #[test]
    fn shape_mismatch_between_splits() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), false);
        write_images(
            &dir.path().join("t10k-images-idx3-ubyte"),
            ImageShape::new(1, 2, 2),
            &[0; 8],
            false,
        )
        .unwrap();
        let msg = err_of(load_dir(dir.path(), "mnist", &classes(), MNIST_HINT));
        assert!(
            msg.contains("train images are 1x3x4 but test images are 1x2x2"),
            "{msg}"
        );
    }

    #[test]
    fn writer_rejects_bad_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        assert!(write_images(&p, ImageShape::new(3, 2, 2), &[0; 12], false).is_err());
        assert!(write_images(&p, ImageShape::new(1, 2, 2), &[0; 5], false).is_err());
    }

    /// Loads the real Fashion-MNIST when it is installed; skipped otherwise (a failure in CI).
    #[test]
    fn real_fashion_mnist() {
        if !Path::new(FASHION_MNIST_DIR).is_dir() {
            crate::testing::missing_tool(
                FASHION_MNIST_DIR,
                "apt-get install dataset-fashion-mnist (scripts/setup.sh does)",
            );
            return;
        }
        let s = load(&DataSource::FashionMnist { path: None, pad: 0 }).unwrap();
        assert_eq!(s.train.len(), 60_000);
        assert_eq!(s.test.len(), 10_000);
        assert_eq!(s.train.shape, ImageShape::new(1, 28, 28));
        assert_eq!(s.train.name, "fashion-mnist/train");
        assert_eq!(s.train.classes, FASHION_MNIST_CLASSES.map(String::from));
        assert_eq!(s.train.class_counts(), vec![6000; 10]);
        assert_eq!(s.test.class_counts(), vec![1000; 10]);
        s.train.validate().unwrap();
        s.test.validate().unwrap();
        // `pad = 2`: the reference geometry, 32x32, the same pixels in the middle.
        let p = load(&DataSource::FashionMnist { path: None, pad: 2 }).unwrap();
        assert_eq!(p.test.shape, ImageShape::new(1, 32, 32));
        assert_eq!(
            p.test.image(7)[2 * 32 + 2..2 * 32 + 30],
            s.test.image(7)[..28]
        );
    }
}
