//! The loader over image folders: batches equal the Pillow-checked
//! evaluation transform, training batches do not depend on the thread
//! count, undecodable files are left out and counted, prefetching changes
//! nothing, and class mismatches between splits are errors.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use dgms_data::{
    decode_rgb, DataSource, EvalTransform, FileSplit, ImageTransform, Loader, LoaderConfig, Mode,
    Split, TrainCrop,
};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/imagenet-mini")
}

fn small(train_crop: TrainCrop) -> ImageTransform {
    ImageTransform {
        resize: 72,
        crop: 64,
        train_crop,
    }
}

fn split(name: &str, transform: ImageTransform) -> Split {
    Split::from(FileSplit::scan(name, &fixture().join(name), transform).unwrap())
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn eval_batches_are_the_pillow_checked_transform() {
    let t = small(TrainCrop::ResizeRandomCrop);
    let val = split("val", t);
    let loader = Loader::new(val.clone(), LoaderConfig::for_split(&val, Mode::Eval, 4, 0)).unwrap();
    let Split::Files(files) = &val else {
        unreachable!()
    };
    let reference = EvalTransform {
        resize: t.resize,
        crop: t.crop,
        ..EvalTransform::default()
    };
    let mut seen = 0;
    for batch in loader.epoch(0) {
        let batch = batch.unwrap();
        let images = values(&batch.images);
        let labels: Vec<u32> = batch.labels.to_vec1().unwrap();
        let per_image = 3 * 64 * 64;
        for (k, &i) in batch.indices.iter().enumerate() {
            let (path, label) = &files.folder.samples[i];
            let expected = reference.apply(&decode_rgb(path).unwrap()).unwrap();
            assert_eq!(&images[k * per_image..(k + 1) * per_image], &expected[..]);
            assert_eq!(labels[k], *label);
            seen += 1;
        }
    }
    assert_eq!(seen, 5);
    assert!(val.skipped().is_empty());
}

#[test]
fn training_batches_ignore_the_thread_count_and_skip_bad_files() {
    for crop in [TrainCrop::ResizeRandomCrop, TrainCrop::RandomResized] {
        let train = split("train", small(crop));
        let config = LoaderConfig::for_split(&train, Mode::Train, 4, 11);
        let loader = Loader::new(train.clone(), config).unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                loader
                    .epoch(1)
                    .map(|b| {
                        let b = b.unwrap();
                        (b.indices.clone(), values(&b.images))
                    })
                    .collect::<Vec<_>>()
            })
        };
        let one = run(1);
        assert_eq!(one, run(3), "{crop:?}: 1 vs 3 threads");
        // 10 files, one truncated: 9 images in the epoch.
        let images: usize = one.iter().map(|(i, _)| i.len()).sum();
        assert_eq!(images, 9, "{crop:?}");
        let skipped = train.skipped();
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].0.ends_with("truncated.JPEG"), "{skipped:?}");
        assert!(skipped[0].1.contains("truncated JPEG"), "{skipped:?}");
        // Another epoch draws other crops.
        let other: Vec<_> = loader
            .epoch(2)
            .map(|b| values(&b.unwrap().images))
            .collect();
        let first: Vec<_> = one.iter().map(|(_, v)| v.clone()).collect();
        assert_ne!(first, other, "{crop:?}: epochs 1 and 2 are the same");
    }
}

#[test]
fn prefetched_batches_equal_the_plain_ones() {
    let train = split("train", small(TrainCrop::ResizeRandomCrop));
    let loader = Loader::new(
        train.clone(),
        LoaderConfig::for_split(&train, Mode::Train, 3, 5),
    )
    .unwrap();
    let plain: Vec<_> = loader
        .epoch_from(0, 1)
        .unwrap()
        .map(|b| values(&b.unwrap().images))
        .collect();
    let fetched: Vec<_> = loader
        .prefetch(0, 1, usize::MAX, 2)
        .unwrap()
        .map(|b| values(&b.unwrap().images))
        .collect();
    // Batches 1..=3 of 3 files; the last holds only the truncated file.
    assert_eq!(plain.len(), 3);
    assert!(plain[2].is_empty());
    assert_eq!(plain, fetched);
    // Dropped after one batch: the worker stops, nothing hangs.
    let mut early = loader.prefetch(0, 0, 4, 1).unwrap();
    assert!(early.next().is_some());
    drop(early);
}

#[test]
fn sources_open_as_folders_and_mismatched_classes_are_refused() {
    let source: DataSource = format!("imagenet:{}", fixture().display()).parse().unwrap();
    let pair = source.open(ImageTransform::default()).unwrap();
    assert_eq!((pair.train.len(), pair.test.len()), (10, 5));
    assert_eq!(pair.train.shape(), (3, 224, 224));
    assert_eq!(pair.train.classes(), 3);
    assert_eq!(source.class_names().unwrap(), pair.test.class_names());

    // A val folder with one class fewer than train.
    let dir = tempfile::tempdir().unwrap();
    for class in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join("train").join(class)).unwrap();
        std::fs::write(dir.path().join("train").join(class).join("x.png"), b"x").unwrap();
    }
    std::fs::create_dir_all(dir.path().join("val/a")).unwrap();
    std::fs::write(dir.path().join("val/a/x.png"), b"x").unwrap();
    let source: DataSource = format!(
        "folder:{},{}",
        dir.path().join("train").display(),
        dir.path().join("val").display()
    )
    .parse()
    .unwrap();
    let msg = source
        .open(ImageTransform::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("has 2 classes") && msg.contains("has 1"),
        "{msg}"
    );
    // A file that is not an image: left out; a batch of only such files
    // is empty.
    let train = Split::from(
        FileSplit::scan("bad", &dir.path().join("val"), ImageTransform::default()).unwrap(),
    );
    let loader = Loader::new(
        train.clone(),
        LoaderConfig::for_split(&train, Mode::Eval, 2, 0),
    )
    .unwrap();
    let batch = loader.batch(0, 0).unwrap();
    assert!(batch.is_empty());
    assert_eq!(batch.images.dims(), &[0, 3, 224, 224]);
    assert_eq!(train.skipped().len(), 1);
}
