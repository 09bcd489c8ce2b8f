//! The embedded Fashion-MNIST data in fixtures/fashion-mnist-subset: a
//! balanced training subset and the full test set.

use dgms_data::{DataSource, DatasetKind, Normalize};

#[test]
fn embedded_subset_is_balanced() {
    let source: DataSource = "embedded".parse().unwrap();
    assert_eq!(source, DataSource::Embedded);
    assert_eq!(source.kind(), Some(DatasetKind::FashionMnist));
    let splits = source.load().unwrap();
    for (split, n) in [(&splits.train, 10_000), (&splits.test, 10_000)] {
        assert_eq!(split.n, n);
        assert_eq!(
            (split.channels, split.height, split.width, split.classes),
            (1, 28, 28, 10)
        );
        assert_eq!(split.images.len(), n * 784);
        assert_eq!(split.class_counts(), vec![n / 10; 10], "{}", split.name);
        split.validate().unwrap();
    }
    assert_eq!(splits.train.name, "fashion-mnist-subset/train");
    assert_eq!(splits.test.name, "fashion-mnist-subset/t10k");

    // The subset's statistics are close to the full set's hard-coded ones.
    let stats = Normalize::compute(&splits.train);
    let full = Normalize::for_kind(DatasetKind::FashionMnist);
    assert!((stats.mean[0] - full.mean[0]).abs() < 0.005, "{stats:?}");
    assert!((stats.std[0] - full.std[0]).abs() < 0.005, "{stats:?}");
}
