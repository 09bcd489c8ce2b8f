//! CIFAR-10 binary batches: round trip on tiny files and error paths.

use std::path::Path;

use dgms_data::cifar::{self, RECORD_BYTES};
use dgms_data::{DataError, DataSource, DatasetKind};

/// `n` records; image bytes depend on (file seed, record, position).
fn records(n: usize, seed: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut file = Vec::new();
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for r in 0..n {
        let label = ((r + seed) % 10) as u8;
        file.push(label);
        labels.push(label);
        for k in 0..3072 {
            let v = ((k * 31 + r * 17 + seed * 101) % 256) as u8;
            file.push(v);
            pixels.push(v);
        }
    }
    (file, pixels, labels)
}

fn write_dir(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let (mut all_pixels, mut all_labels) = (Vec::new(), Vec::new());
    for (i, name) in cifar::TRAIN_FILES.iter().enumerate() {
        let (file, pixels, labels) = records(2 + i, i);
        std::fs::write(dir.join(name), file).unwrap();
        all_pixels.extend(pixels);
        all_labels.extend(labels);
    }
    std::fs::write(dir.join(cifar::TEST_FILE), records(3, 9).0).unwrap();
    (all_pixels, all_labels)
}

#[test]
fn round_trip_tiny_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (pixels, labels) = write_dir(dir.path());
    let splits = DataSource::Cifar10(dir.path().to_path_buf())
        .load()
        .unwrap();
    let train = &splits.train;
    assert_eq!(
        (train.n, train.channels, train.height, train.width),
        (20, 3, 32, 32)
    );
    assert_eq!(train.kind, DatasetKind::Cifar10);
    assert_eq!(train.images, pixels);
    assert_eq!(train.labels, labels);
    assert_eq!(splits.test.n, 3);
    assert_eq!(splits.test.image(1).unwrap(), &records(3, 9).1[3072..6144]);
}

#[test]
fn nested_archive_folder_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&nested).unwrap();
    write_dir(&nested);
    let splits = DataSource::Cifar10(dir.path().to_path_buf())
        .load()
        .unwrap();
    assert_eq!(splits.train.n, 20);
}

#[test]
fn truncated_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data_batch_3.bin");
    let (file, _, _) = records(4, 0);
    std::fs::write(&path, &file[..file.len() - 100]).unwrap();
    let err = cifar::read_batch(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::CifarSize {
                found: 12192,
                record: RECORD_BYTES,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("data_batch_3.bin"), "{msg}");
    assert!(
        msg.contains("12192 bytes") && msg.contains("multiple of the 3073-byte CIFAR-10 record"),
        "{msg}"
    );

    std::fs::write(&path, []).unwrap();
    let msg = cifar::read_batch(&path).unwrap_err().to_string();
    assert!(
        msg.contains("data_batch_3.bin: 0 bytes") && msg.contains("non-zero multiple"),
        "{msg}"
    );
}

#[test]
fn bad_label_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test_batch.bin");
    let (mut file, _, _) = records(3, 0);
    file[RECORD_BYTES] = 12;
    std::fs::write(&path, &file).unwrap();
    let msg = cifar::read_batch(&path).unwrap_err().to_string();
    assert!(
        msg.contains("test_batch.bin") && msg.contains("label 12 at sample 1"),
        "{msg}"
    );

    write_dir(dir.path());
    std::fs::remove_file(dir.path().join("data_batch_4.bin")).unwrap();
    let err = DataSource::Cifar10(dir.path().to_path_buf())
        .load()
        .unwrap_err();
    assert!(matches!(err, DataError::MissingFile { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("data_batch_4.bin")
            && msg.contains("not found")
            && msg.contains("CIFAR-10 binary batch"),
        "{msg}"
    );
}
