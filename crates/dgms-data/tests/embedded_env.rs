//! `DGMS_EMBEDDED_DATA` moves the embedded subset. Alone in its test binary
//! because it sets a process-wide environment variable.

use dgms_data::idx;
use dgms_data::DataSource;

#[test]
fn env_override() {
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "t10k"] {
        idx::write_images(
            &dir.path().join(format!("{split}-images-idx3-ubyte.gz")),
            2,
            2,
            &[7; 12],
        )
        .unwrap();
        idx::write_labels(
            &dir.path().join(format!("{split}-labels-idx1-ubyte.gz")),
            &[1, 2, 3],
        )
        .unwrap();
    }
    std::env::set_var("DGMS_EMBEDDED_DATA", dir.path());
    assert_eq!(DataSource::embedded_dir(), dir.path());
    let splits = DataSource::Embedded.load().unwrap();
    assert_eq!((splits.train.n, splits.test.n), (3, 3));

    std::env::set_var("DGMS_EMBEDDED_DATA", dir.path().join("gone"));
    let msg = DataSource::Embedded.load().unwrap_err().to_string();
    assert!(msg.contains("gone") && msg.contains("not found"), "{msg}");

    // Empty means unset: back to the repository's fixtures.
    std::env::set_var("DGMS_EMBEDDED_DATA", "");
    assert!(DataSource::embedded_dir().ends_with("fixtures/fashion-mnist-subset"));
    assert!(DataSource::embedded_dir()
        .join("train-images-idx3-ubyte.gz")
        .is_file());
}
