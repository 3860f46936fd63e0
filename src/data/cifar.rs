//! The binary versions of CIFAR-10 and CIFAR-100.
//!
//! CIFAR-10: `data_batch_1.bin`..`data_batch_5.bin` (train) and `test_batch.bin`,
//! each a sequence of records of 1 label byte and 3072 pixel bytes (3x32x32,
//! CHW: the red plane, then green, then blue); an optional `batches.meta.txt`
//! gives the 10 class names, one a line. The files may sit in the given folder
//! or in its `cifar-10-batches-bin/` sub-folder.
//!
//! CIFAR-100: `train.bin` and `test.bin`, records of 1 coarse label byte, 1 fine
//! label byte and 3072 pixel bytes; optional `fine_label_names.txt` and
//! `coarse_label_names.txt`. The files may sit in the given folder or in its
//! `cifar-100-binary/` sub-folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{CIFAR10_CLASSES, Cifar100Labels, DataError, Dataset, ImageShape, Splits};

/// Shape of a CIFAR image.
pub const CIFAR_SHAPE: ImageShape = ImageShape::new(3, 32, 32);
/// Bytes of pixels per CIFAR record.
pub const PIXELS: usize = 3 * 32 * 32;
/// Names of the CIFAR-10 training batches.
pub const CIFAR10_TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// Name of the CIFAR-10 test batch.
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";

const CIFAR10_HINT: &str = "expected the CIFAR-10 binary version: data_batch_1.bin..data_batch_5.bin \
     and test_batch.bin in the folder or in its cifar-10-batches-bin/ sub-folder";
const CIFAR100_HINT: &str = "expected the CIFAR-100 binary version: train.bin and test.bin \
     in the folder or in its cifar-100-binary/ sub-folder";

/// Reads a file of fixed-size records: `label_bytes` label bytes then
/// [`PIXELS`] pixel bytes each. `ranges[j]` bounds label byte `j`
/// (name, number of classes); label byte `pick` becomes the returned label.
fn read_records(
    path: &Path,
    ranges: &[(&str, usize)],
    pick: usize,
) -> Result<(Vec<u16>, Vec<u8>), DataError> {
    let data = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let label_bytes = ranges.len();
    let record = label_bytes + PIXELS;
    if data.is_empty() {
        return Err(DataError::invalid(
            path,
            format!("empty file, expected records of {record} bytes"),
        ));
    }
    if !data.len().is_multiple_of(record) {
        return Err(DataError::invalid(
            path,
            format!(
                "size {} bytes is not a multiple of the record size {record} \
                 ({label_bytes} label byte(s) + {PIXELS} pixel bytes)",
                data.len()
            ),
        ));
    }
    let n = data.len() / record;
    let mut labels = Vec::with_capacity(n);
    let mut images = Vec::with_capacity(n * PIXELS);
    for (i, rec) in data.chunks_exact(record).enumerate() {
        for (j, &(what, classes)) in ranges.iter().enumerate() {
            if usize::from(rec[j]) >= classes {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "record {i}: {what} {} is out of range, expected < {classes}",
                        rec[j]
                    ),
                ));
            }
        }
        labels.push(u16::from(rec[pick]));
        images.extend_from_slice(&rec[label_bytes..]);
    }
    Ok((labels, images))
}

/// Reads one CIFAR-10 batch file: labels (each < 10) and pixels, 3x32x32 CHW
/// per record. Errors on an empty file, a size that is not a multiple of 3073
/// bytes, or a label out of range (naming the record).
pub fn read_cifar10_batch(path: &Path) -> Result<(Vec<u16>, Vec<u8>), DataError> {
    read_records(path, &[("label", 10)], 0)
}

/// Reads one CIFAR-100 file (`train.bin` or `test.bin`): the chosen labels and
/// pixels. Checks both labels of every record (coarse < 20, fine < 100).
pub fn read_cifar100_file(
    path: &Path,
    which: Cifar100Labels,
) -> Result<(Vec<u16>, Vec<u8>), DataError> {
    let pick = match which {
        Cifar100Labels::Coarse => 0,
        Cifar100Labels::Fine => 1,
    };
    read_records(path, &[("coarse label", 20), ("fine label", 100)], pick)
}

fn write_records(path: &Path, labels: &[&[u8]], images: &[u8]) -> Result<(), DataError> {
    let n = images.len() / PIXELS;
    if !images.len().is_multiple_of(PIXELS) || labels.iter().any(|l| l.len() != n) {
        return Err(DataError::invalid(
            path,
            format!(
                "cannot write {} bytes of pixels as CIFAR records: expected a multiple of {PIXELS} \
                 and one label per image",
                images.len()
            ),
        ));
    }
    let io = |e| DataError::io(path, e);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for (i, img) in images.chunks_exact(PIXELS).enumerate() {
        for l in labels {
            out.write_all(&[l[i]]).map_err(io)?;
        }
        out.write_all(img).map_err(io)?;
    }
    out.flush().map_err(io)
}

/// Writes a CIFAR-10 batch file from `labels` and `images` (3x32x32 CHW each).
/// Used by tests to make small files.
pub fn write_cifar10_batch(path: &Path, labels: &[u8], images: &[u8]) -> Result<(), DataError> {
    write_records(path, &[labels], images)
}

/// Writes a CIFAR-100 file from coarse labels, fine labels and `images`
/// (3x32x32 CHW each). Used by tests to make small files.
pub fn write_cifar100_file(
    path: &Path,
    coarse: &[u8],
    fine: &[u8],
    images: &[u8],
) -> Result<(), DataError> {
    write_records(path, &[coarse, fine], images)
}

/// The folder holding `marker`: `dir` itself or `dir/<sub>`.
fn resolve_dir(dir: &Path, sub: &str, marker: &str, hint: &str) -> Result<PathBuf, DataError> {
    if dir.join(marker).is_file() {
        return Ok(dir.to_path_buf());
    }
    let nested = dir.join(sub);
    if nested.join(marker).is_file() {
        return Ok(nested);
    }
    Err(DataError::Missing {
        path: dir.join(marker),
        hint: format!("also looked for {}; {hint}", nested.join(marker).display()),
    })
}

fn require(dir: &Path, file: &str, hint: &str) -> Result<PathBuf, DataError> {
    let path = dir.join(file);
    if path.is_file() {
        Ok(path)
    } else {
        Err(DataError::Missing {
            path,
            hint: hint.to_string(),
        })
    }
}

/// Reads optional class names, one a non-empty line; `None` when the file is absent.
fn read_names(path: &Path, expected: usize) -> Result<Option<Vec<String>>, DataError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != expected {
        return Err(DataError::invalid(
            path,
            format!(
                "{} class names, expected {expected} (one per line)",
                names.len()
            ),
        ));
    }
    Ok(Some(names))
}

fn dataset(name: String, labels: Vec<u16>, images: Vec<u8>, classes: &[String]) -> Dataset {
    Dataset {
        name,
        shape: CIFAR_SHAPE,
        images,
        labels,
        classes: classes.to_vec(),
    }
}

/// Loads CIFAR-10 from `dir` (or `dir/cifar-10-batches-bin`): the five training
/// batches concatenated in order, and the test batch. Classes come from
/// `batches.meta.txt` when present, else [`CIFAR10_CLASSES`].
pub fn load_cifar10(dir: &Path) -> Result<Splits, DataError> {
    let dir = resolve_dir(
        dir,
        "cifar-10-batches-bin",
        CIFAR10_TRAIN_FILES[0],
        CIFAR10_HINT,
    )?;
    let classes = read_names(&dir.join("batches.meta.txt"), 10)?
        .unwrap_or_else(|| CIFAR10_CLASSES.map(String::from).to_vec());
    // Check that every file is there before reading any.
    let train_paths = CIFAR10_TRAIN_FILES
        .iter()
        .map(|f| require(&dir, f, CIFAR10_HINT))
        .collect::<Result<Vec<_>, _>>()?;
    let test_path = require(&dir, CIFAR10_TEST_FILE, CIFAR10_HINT)?;
    let (mut labels, mut images) = (Vec::new(), Vec::new());
    for p in &train_paths {
        let (l, i) = read_cifar10_batch(p)?;
        labels.extend(l);
        images.extend(i);
    }
    let (test_labels, test_images) = read_cifar10_batch(&test_path)?;
    Ok(Splits {
        train: dataset("cifar10/train".into(), labels, images, &classes),
        test: dataset("cifar10/test".into(), test_labels, test_images, &classes),
    })
}

/// Loads CIFAR-100 from `dir` (or `dir/cifar-100-binary`) with the fine
/// (100 classes) or coarse (20 classes) labels. Class names come from
/// `fine_label_names.txt` / `coarse_label_names.txt` when present, else "0"...
pub fn load_cifar100(dir: &Path, which: Cifar100Labels) -> Result<Splits, DataError> {
    let dir = resolve_dir(dir, "cifar-100-binary", "train.bin", CIFAR100_HINT)?;
    let (names_file, n_classes) = match which {
        Cifar100Labels::Fine => ("fine_label_names.txt", 100),
        Cifar100Labels::Coarse => ("coarse_label_names.txt", 20),
    };
    let classes = read_names(&dir.join(names_file), n_classes)?
        .unwrap_or_else(|| (0..n_classes).map(|i| i.to_string()).collect());
    let train_path = require(&dir, "train.bin", CIFAR100_HINT)?;
    let test_path = require(&dir, "test.bin", CIFAR100_HINT)?;
    let (labels, images) = read_cifar100_file(&train_path, which)?;
    let (test_labels, test_images) = read_cifar100_file(&test_path, which)?;
    Ok(Splits {
        train: dataset("cifar100/train".into(), labels, images, &classes),
        test: dataset("cifar100/test".into(), test_labels, test_images, &classes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixels(n: usize, salt: u8) -> Vec<u8> {
        (0..n * PIXELS)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
            .collect()
    }

    fn write_cifar10(dir: &Path) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        for (b, f) in CIFAR10_TRAIN_FILES.iter().enumerate() {
            let imgs = pixels(2, b as u8);
            write_cifar10_batch(&dir.join(f), &[b as u8, 9], &imgs).unwrap();
            all.push(imgs);
        }
        write_cifar10_batch(&dir.join(CIFAR10_TEST_FILE), &[3, 4, 5], &pixels(3, 99)).unwrap();
        all
    }

    fn err_of(r: Result<impl std::fmt::Debug, DataError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn cifar10_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let batches = write_cifar10(dir.path());
        let s = load_cifar10(dir.path()).unwrap();
        assert_eq!(s.train.len(), 10);
        assert_eq!(s.train.shape, ImageShape::new(3, 32, 32));
        assert_eq!(s.train.labels, vec![0, 9, 1, 9, 2, 9, 3, 9, 4, 9]);
        assert_eq!(s.train.images, batches.concat());
        assert_eq!(s.test.labels, vec![3, 4, 5]);
        assert_eq!(s.test.images, pixels(3, 99));
        assert_eq!(s.train.classes[0], "airplane");
        assert_eq!(s.train.name, "cifar10/train");
        assert_eq!(s.test.name, "cifar10/test");
    }

    #[test]
    fn cifar10_subfolder_and_meta() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&sub).unwrap();
        write_cifar10(&sub);
        let names: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        std::fs::write(sub.join("batches.meta.txt"), names.join("\n") + "\n\n").unwrap();
        let s = load_cifar10(dir.path()).unwrap();
        assert_eq!(s.train.classes, names);

        std::fs::write(sub.join("batches.meta.txt"), "a\nb\n").unwrap();
        let msg = err_of(load_cifar10(dir.path()));
        assert!(
            msg.contains("batches.meta.txt: 2 class names, expected 10"),
            "{msg}"
        );
    }

    #[test]
    fn cifar10_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let msg = err_of(load_cifar10(dir.path()));
        assert!(msg.contains("data_batch_1.bin: not found"), "{msg}");
        assert!(
            msg.contains("cifar-10-batches-bin/data_batch_1.bin"),
            "{msg}"
        );

        write_cifar10(dir.path());
        std::fs::remove_file(dir.path().join("data_batch_4.bin")).unwrap();
        let msg = err_of(load_cifar10(dir.path()));
        assert!(msg.contains("data_batch_4.bin: not found"), "{msg}");

        write_cifar10(dir.path());
        std::fs::remove_file(dir.path().join("test_batch.bin")).unwrap();
        let msg = err_of(load_cifar10(dir.path()));
        assert!(msg.contains("test_batch.bin: not found"), "{msg}");
    }

    #[test]
    fn cifar10_bad_size_empty_and_label() {
        let dir = tempfile::tempdir().unwrap();
        write_cifar10(dir.path());
        let p = dir.path().join("data_batch_2.bin");

        let mut data = std::fs::read(&p).unwrap();
        data.truncate(data.len() - 1);
        std::fs::write(&p, &data).unwrap();
        let msg = err_of(load_cifar10(dir.path()));
        assert_eq!(
            msg,
            format!(
                "{}: size 6145 bytes is not a multiple of the record size 3073 \
                 (1 label byte(s) + 3072 pixel bytes)",
                p.display()
            )
        );

        std::fs::write(&p, b"").unwrap();
        let msg = err_of(load_cifar10(dir.path()));
        assert!(msg.starts_with(&p.display().to_string()), "{msg}");
        assert!(msg.contains("empty file"), "{msg}");

        write_cifar10_batch(&p, &[1, 10], &pixels(2, 0)).unwrap();
        let msg = err_of(load_cifar10(dir.path()));
        assert_eq!(
            msg,
            format!(
                "{}: record 1: label 10 is out of range, expected < 10",
                p.display()
            )
        );
    }

    #[test]
    fn cifar100_round_trip_fine_and_coarse() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("cifar-100-binary");
        std::fs::create_dir(&sub).unwrap();
        write_cifar100_file(&sub.join("train.bin"), &[1, 19], &[42, 99], &pixels(2, 1)).unwrap();
        write_cifar100_file(&sub.join("test.bin"), &[0], &[7], &pixels(1, 2)).unwrap();

        let fine = load_cifar100(dir.path(), Cifar100Labels::Fine).unwrap();
        assert_eq!(fine.train.labels, vec![42, 99]);
        assert_eq!(fine.train.images, pixels(2, 1));
        assert_eq!(fine.test.labels, vec![7]);
        assert_eq!(fine.train.classes.len(), 100);
        assert_eq!(fine.train.classes[99], "99");
        assert_eq!(fine.train.name, "cifar100/train");

        let names: Vec<String> = (0..20).map(|i| format!("super{i}")).collect();
        std::fs::write(sub.join("coarse_label_names.txt"), names.join("\n")).unwrap();
        let coarse = load_cifar100(&sub, Cifar100Labels::Coarse).unwrap();
        assert_eq!(coarse.train.labels, vec![1, 19]);
        assert_eq!(coarse.test.labels, vec![0]);
        assert_eq!(coarse.train.classes, names);
        coarse.train.validate().unwrap();
    }

    #[test]
    fn cifar100_errors() {
        let dir = tempfile::tempdir().unwrap();
        let msg = err_of(load_cifar100(dir.path(), Cifar100Labels::Fine));
        assert!(msg.contains("train.bin: not found"), "{msg}");
        assert!(msg.contains("CIFAR-100"), "{msg}");

        let train = dir.path().join("train.bin");
        write_cifar100_file(&train, &[1], &[2], &pixels(1, 0)).unwrap();
        let msg = err_of(load_cifar100(dir.path(), Cifar100Labels::Fine));
        assert!(msg.contains("test.bin: not found"), "{msg}");

        let test = dir.path().join("test.bin");
        write_cifar100_file(&test, &[1, 20], &[2, 3], &pixels(2, 0)).unwrap();
        let msg = err_of(load_cifar100(dir.path(), Cifar100Labels::Fine));
        assert!(
            msg.contains("test.bin: record 1: coarse label 20 is out of range, expected < 20"),
            "{msg}"
        );

        write_cifar100_file(&test, &[1, 2, 3], &[2, 3, 100], &pixels(3, 0)).unwrap();
        let msg = err_of(load_cifar100(dir.path(), Cifar100Labels::Coarse));
        assert!(
            msg.contains("record 2: fine label 100 is out of range, expected < 100"),
            "{msg}"
        );

        // a CIFAR-10 record size is not a CIFAR-100 record size
        write_cifar10_batch(&test, &[1, 2], &pixels(2, 0)).unwrap();
        let msg = err_of(load_cifar100(dir.path(), Cifar100Labels::Fine));
        assert!(
            msg.contains("size 6146 bytes is not a multiple of the record size 3074"),
            "{msg}"
        );

        std::fs::write(&test, b"").unwrap();
        assert!(err_of(load_cifar100(dir.path(), Cifar100Labels::Fine)).contains("empty file"));
    }

    #[test]
    fn writer_rejects_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        assert!(write_cifar10_batch(&p, &[1, 2], &pixels(1, 0)).is_err());
        assert!(write_cifar10_batch(&p, &[1], &[0; 5]).is_err());
    }
}
