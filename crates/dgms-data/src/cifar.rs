//! CIFAR-10 binary batches (`data_batch_1.bin` .. `data_batch_5.bin`,
//! `test_batch.bin`): records of 1 label byte followed by 3 x 32 x 32 pixel
//! bytes in CHW order (the red plane, then green, then blue).

use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, DatasetKind, Splits};
use crate::error::{DataError, Result};

/// Bytes of one image.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;
/// Bytes of one record: the label, then the image.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Records in each file of the official release.
pub const RECORDS_PER_BATCH: usize = 10_000;

/// The training batch files, in order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test batch file.
pub const TEST_FILE: &str = "test_batch.bin";

/// Reads one batch file into `(pixels, labels)`: `n * 3072` CHW bytes and `n`
/// labels. Any non-zero whole number of records is accepted (so that small
/// test files work); a count other than the official 10,000 is logged.
pub fn read_batch(path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let what = "a CIFAR-10 binary batch (3073-byte records: label + 3x32x32 pixels)";
    let (bytes, _) = crate::idx::read_maybe_gz(path, what)?;
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(DataError::CifarSize {
            path: path.to_path_buf(),
            found: bytes.len() as u64,
            record: RECORD_BYTES,
        });
    }
    let n = bytes.len() / RECORD_BYTES;
    if n != RECORDS_PER_BATCH {
        tracing::warn!(
            path = %path.display(),
            records = n,
            "CIFAR-10 batch has {n} records, the official files have {RECORDS_PER_BATCH}"
        );
    }
    let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for (index, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = record[0];
        if label >= 10 {
            return Err(DataError::BadLabel {
                path: path.to_path_buf(),
                index,
                label,
                classes: 10,
            });
        }
        labels.push(label);
        pixels.extend_from_slice(&record[1..]);
    }
    Ok((pixels, labels))
}

/// Reads and concatenates several batch files into one dataset.
pub fn read_batches(paths: &[PathBuf], name: impl Into<String>) -> Result<Dataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        let (p, l) = read_batch(path)?;
        pixels.extend(p);
        labels.extend(l);
    }
    Dataset::new(name, DatasetKind::Cifar10, pixels, labels, 3, 32, 32, 10)
}

/// Loads the train (the five `data_batch_*.bin`) and test (`test_batch.bin`)
/// splits from `dir`, or from its `cifar-10-batches-bin` subfolder (where the
/// official archive unpacks) when `dir` itself holds no batch.
pub fn load_dir(dir: &Path, name: &str) -> Result<Splits> {
    if !dir.is_dir() {
        return Err(DataError::MissingFile {
            path: dir.to_path_buf(),
            what: "a folder holding the CIFAR-10 binary batches \
                   (data_batch_1.bin .. data_batch_5.bin, test_batch.bin)"
                .to_string(),
        });
    }
    let nested = dir.join("cifar-10-batches-bin");
    let dir = if !dir.join(TEST_FILE).exists() && nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    };
    let train: Vec<PathBuf> = TRAIN_FILES.iter().map(|f| dir.join(f)).collect();
    Ok(Splits {
        train: read_batches(&train, format!("{name}/train"))?,
        test: read_batches(&[dir.join(TEST_FILE)], format!("{name}/test"))?,
    })
}
