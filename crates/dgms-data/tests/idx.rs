//! idx reader: round trips on tiny generated files and every error path.

use std::path::Path;

use dgms_data::idx::{self, IMAGES_MAGIC, LABELS_MAGIC};
use dgms_data::{DataError, DataSource, DatasetKind};

fn pixels(n: usize, rows: usize, cols: usize) -> Vec<u8> {
    (0..n * rows * cols).map(|i| (i * 7 % 256) as u8).collect()
}

/// Writes a full tiny train/t10k folder; `ext` is "" or ".gz".
fn write_dir(dir: &Path, ext: &str, n_train: usize, n_test: usize) {
    for (split, n) in [("train", n_train), ("t10k", n_test)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        idx::write_images(
            &dir.join(format!("{split}-images-idx3-ubyte{ext}")),
            3,
            4,
            &pixels(n, 3, 4),
        )
        .unwrap();
        idx::write_labels(
            &dir.join(format!("{split}-labels-idx1-ubyte{ext}")),
            &labels,
        )
        .unwrap();
    }
}

/// Raw bytes of an idx images file, for hand-made corruptions.
fn raw_images(n: u32, rows: u32, cols: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = IMAGES_MAGIC.to_be_bytes().to_vec();
    for d in [n, rows, cols] {
        v.extend(d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

#[test]
fn round_trip_raw_and_gz() {
    for ext in ["", ".gz"] {
        let dir = tempfile::tempdir().unwrap();
        write_dir(dir.path(), ext, 12, 5);
        let splits = DataSource::Mnist(dir.path().to_path_buf()).load().unwrap();
        let train = &splits.train;
        assert_eq!(
            (train.n, train.channels, train.height, train.width),
            (12, 1, 3, 4)
        );
        assert_eq!(train.images, pixels(12, 3, 4));
        assert_eq!(
            train.labels,
            (0..12).map(|i| (i % 10) as u8).collect::<Vec<_>>()
        );
        assert_eq!(train.kind, DatasetKind::Mnist);
        assert_eq!(train.classes, 10);
        assert_eq!(splits.test.n, 5);
        assert_eq!(splits.test.image(4).unwrap(), &pixels(5, 3, 4)[48..60]);
    }
}

#[test]
fn gz_detected_by_content_and_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.gz");
    let b = dir.path().join("b.gz");
    idx::write_images(&a, 3, 4, &pixels(2, 3, 4)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    idx::write_images(&b, 3, 4, &pixels(2, 3, 4)).unwrap();
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "gzip output depends on the time"
    );
    // A gzip file without the .gz name still reads.
    let renamed = dir.path().join("plain-name");
    std::fs::rename(&a, &renamed).unwrap();
    assert_eq!(idx::read_images(&renamed).unwrap().pixels, pixels(2, 3, 4));
}

#[test]
fn truncated_file_says_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train-images-idx3-ubyte");
    let mut bytes = raw_images(10, 28, 28, &vec![0u8; 10 * 784]);
    bytes.truncate(16 + 5 * 784);
    std::fs::write(&path, &bytes).unwrap();
    let err = idx::read_images(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Truncated {
                expected: 7856,
                found: 3936,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
    assert!(msg.contains("expected 7856 bytes, found 3936"), "{msg}");
    assert!(msg.contains("10 x 28 x 28"), "{msg}");

    // Truncated inside the header.
    std::fs::write(&path, &bytes[..10]).unwrap();
    let msg = idx::read_images(&path).unwrap_err().to_string();
    assert!(msg.contains("expected 16 bytes, found 10"), "{msg}");

    // Truncated payload inside a valid gzip stream: sizes are after gunzip.
    let gz = dir.path().join("t.gz");
    idx::write_labels(&gz, &[1, 2, 3]).unwrap();
    let mut raw = LABELS_MAGIC.to_be_bytes().to_vec();
    raw.extend(5u32.to_be_bytes());
    raw.extend([1, 2, 3]);
    let gz2 = dir.path().join("short-labels.gz");
    write_gz(&gz2, &raw);
    let msg = idx::read_labels(&gz2, 10).unwrap_err().to_string();
    assert!(
        msg.contains("short-labels.gz")
            && msg.contains("expected 13 bytes, found 11")
            && msg.contains("gunzip"),
        "{msg}"
    );
}

fn write_gz(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut w = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    w.write_all(bytes).unwrap();
    w.finish().unwrap();
}

#[test]
fn cut_gzip_stream_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gz");
    idx::write_images(&path, 28, 28, &pixels(20, 28, 28)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = idx::read_images(&path).unwrap_err().to_string();
    assert!(
        msg.contains("cut.gz") && msg.contains("gzip stream corrupt or truncated"),
        "{msg}"
    );
}

#[test]
fn trailing_data_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long");
    std::fs::write(&path, raw_images(1, 2, 2, &[1, 2, 3, 4, 5])).unwrap();
    let msg = idx::read_images(&path).unwrap_err().to_string();
    assert!(
        msg.contains("long")
            && msg.contains("trailing data")
            && msg.contains("expected 20 bytes, found 21"),
        "{msg}"
    );
}

#[test]
fn wrong_magic_names_both_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("train-labels-idx1-ubyte");
    idx::write_labels(&labels, &[0, 1, 2]).unwrap();
    // A labels file where images are expected.
    let err = idx::read_images(&labels).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::WrongMagic {
                expected: 0x803,
                found: 0x801,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("train-labels-idx1-ubyte"), "{msg}");
    assert!(
        msg.contains("0x00000801") && msg.contains("expected 0x00000803"),
        "{msg}"
    );
    assert!(msg.contains("looks like an idx labels file"), "{msg}");

    // Garbage.
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"PK\x03\x04 not an idx file").unwrap();
    let msg = idx::read_labels(&junk, 10).unwrap_err().to_string();
    assert!(
        msg.contains("junk.bin")
            && msg.contains("expected 0x00000801")
            && msg.contains("not an idx file"),
        "{msg}"
    );
}

#[test]
fn image_label_count_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), ".gz", 12, 5);
    idx::write_labels(&dir.path().join("t10k-labels-idx1-ubyte.gz"), &[0, 1, 2, 3]).unwrap();
    let err = DataSource::FashionMnist(dir.path().to_path_buf())
        .load()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("t10k-images-idx3-ubyte.gz has 5 images"),
        "{msg}"
    );
    assert!(
        msg.contains("t10k-labels-idx1-ubyte.gz has 4 labels"),
        "{msg}"
    );
    assert!(msg.contains("expected the same count"), "{msg}");
}

#[test]
fn label_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels");
    idx::write_labels(&path, &[0, 9, 10, 3]).unwrap();
    let msg = idx::read_labels(&path, 10).unwrap_err().to_string();
    assert!(
        msg.contains("labels") && msg.contains("label 10 at sample 2") && msg.contains("< 10"),
        "{msg}"
    );
}

#[test]
fn zero_sized_images_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zero");
    std::fs::write(&path, raw_images(3, 0, 28, &[])).unwrap();
    let msg = idx::read_images(&path).unwrap_err().to_string();
    assert!(msg.contains("zero") && msg.contains("0 x 28"), "{msg}");
}

#[test]
fn missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("t10k-images-idx3-ubyte.gz");
    let err = idx::read_images(&missing).unwrap_err();
    assert!(matches!(err, DataError::MissingFile { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("t10k-images-idx3-ubyte.gz")
            && msg.contains("not found")
            && msg.contains("idx images file"),
        "{msg}"
    );

    // A folder missing one of the four files lists the names it looked for.
    write_dir(dir.path(), ".gz", 3, 3);
    std::fs::remove_file(dir.path().join("train-labels-idx1-ubyte.gz")).unwrap();
    let msg = DataSource::Mnist(dir.path().to_path_buf())
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("no mnist train labels in this folder"),
        "{msg}"
    );
    assert!(
        msg.contains("train-labels-idx1-ubyte.gz, train-labels-idx1-ubyte"),
        "{msg}"
    );

    // A folder that does not exist.
    let nowhere = dir.path().join("nowhere");
    let msg = DataSource::FashionMnist(nowhere)
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("nowhere")
            && msg.contains("not found")
            && msg.contains("train-images-idx3-ubyte.gz"),
        "{msg}"
    );
}

/// A gzip file of `header` and `body`, then `members` more gzip members of
/// 16 MiB of zeros each (a small file inflating to `members` x 16 MiB).
fn gzip_bomb(path: &Path, header: &[u8], body: &[u8], members: usize) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let mut first = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    first.write_all(header).unwrap();
    first.write_all(body).unwrap();
    file.write_all(&first.finish().unwrap()).unwrap();
    let mut zeros = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    zeros.write_all(&vec![0u8; 16 << 20]).unwrap();
    let member = zeros.finish().unwrap();
    for _ in 0..members {
        file.write_all(&member).unwrap();
    }
}

#[test]
fn gzip_bomb_behind_a_valid_header_fails_fast() {
    // 10 images of 28 x 28, then 1 GiB of compressed zeros (~1 MB on disk).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb-images-idx3-ubyte.gz");
    gzip_bomb(
        &path,
        &raw_images(10, 28, 28, &[])[..16],
        &pixels(10, 28, 28),
        64,
    );
    assert!(std::fs::metadata(&path).unwrap().len() < 4 << 20);
    let start = std::time::Instant::now();
    let err = idx::read_images(&path).unwrap_err();
    // Inflating the whole GiB takes seconds; the probe stops after 64 KiB.
    assert!(
        start.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let expected = 16 + 10 * 784;
    match &err {
        DataError::TrailingData {
            expected: e, found, ..
        } => {
            assert_eq!(*e, expected);
            assert_eq!(*found, expected + idx::TRAILING_PROBE);
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("bomb-images-idx3-ubyte.gz"), "{msg}");
    assert!(msg.contains("10 x 28 x 28, after gunzip"), "{msg}");
    assert!(msg.contains("at least 65536 bytes past it"), "{msg}");
}

#[test]
fn header_implying_an_absurd_size_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    // 4e9 x 4e9 x 4e9 overflows u64; 60000 x 1000 x 1000 is over the limit.
    for (name, dims, words) in [
        ("overflow", [4_000_000_000u32; 3], "overflow"),
        ("huge", [60_000, 1_000, 1_000], "more than the limit"),
    ] {
        let path = dir.path().join(format!("{name}.gz"));
        let mut header = IMAGES_MAGIC.to_be_bytes().to_vec();
        for d in dims {
            header.extend(d.to_be_bytes());
        }
        gzip_bomb(&path, &header, &[], 1);
        let msg = idx::read_images(&path).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("{name}.gz")) && msg.contains(words),
            "{msg}"
        );
    }
    // A header saying 1e9 bytes over a short body: truncated, reading only
    // what is there.
    let path = dir.path().join("short.gz");
    let mut header = IMAGES_MAGIC.to_be_bytes().to_vec();
    for d in [1_000u32, 1_000, 1_000] {
        header.extend(d.to_be_bytes());
    }
    gzip_bomb(&path, &header, &[7; 100], 0);
    let msg = idx::read_images(&path).unwrap_err().to_string();
    assert!(
        msg.contains("expected 1000000016 bytes, found 116"),
        "{msg}"
    );
}
