//! Loader: seeded shuffling, thread-count independence, resume, eval mode.

use dgms_data::{
    Augment, DataError, DataSource, Dataset, DatasetKind, Loader, LoaderConfig, Mode, Normalize,
};
use dgms_test_support::rng::chacha;
use rand::Rng;

/// 50 random 3 x 8 x 8 images, all pixels non-zero.
fn synthetic(n: usize) -> Dataset {
    let mut rng = chacha(11);
    let images = (0..n * 3 * 64)
        .map(|_| rng.random_range(1..=255u8))
        .collect();
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    Dataset::new(
        "synthetic",
        DatasetKind::Cifar10,
        images,
        labels,
        3,
        8,
        8,
        10,
    )
    .unwrap()
}

fn train_loader(ds: Dataset, batch: usize, seed: u64) -> Loader {
    Loader::new(ds, LoaderConfig::train(DatasetKind::Cifar10, batch, seed)).unwrap()
}

/// Every batch of an epoch as plain vectors.
fn epoch_data(loader: &Loader, epoch: u64) -> Vec<(Vec<f32>, Vec<u32>, Vec<usize>)> {
    loader
        .epoch(epoch)
        .map(|b| {
            let b = b.unwrap();
            let images = b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (images, b.labels.to_vec1::<u32>().unwrap(), b.indices)
        })
        .collect()
}

/// The normalised raw image `i`, what a batch holds without augmentation.
fn normalised(ds: &Dataset, norm: &Normalize, i: usize) -> Vec<f32> {
    let plane = ds.height * ds.width;
    ds.image(i)
        .unwrap()
        .iter()
        .enumerate()
        .map(|(k, &v)| Normalize::value(v, norm.mean[k / plane], norm.std[k / plane]))
        .collect()
}

#[test]
fn shuffling_is_seeded_per_epoch() {
    let a = train_loader(synthetic(50), 16, 7);
    let b = train_loader(synthetic(50), 16, 7);
    let c = train_loader(synthetic(50), 16, 8);
    assert_eq!(a.order(0), b.order(0));
    assert_eq!(a.order(3), b.order(3));
    assert_ne!(a.order(0), a.order(1), "epochs share an order");
    assert_ne!(a.order(0), c.order(0), "seeds share an order");
    let mut sorted = a.order(5);
    sorted.sort();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    // Same seed, same batches (augmentation included).
    assert_eq!(epoch_data(&a, 2), epoch_data(&b, 2));
    assert_ne!(epoch_data(&a, 2), epoch_data(&c, 2));
    // Without shuffling the order is the dataset's, every epoch.
    let plain = Loader::new(
        synthetic(50),
        LoaderConfig::train(DatasetKind::Cifar10, 16, 7).with_shuffle(false),
    )
    .unwrap();
    assert_eq!(plain.order(4), (0..50).collect::<Vec<_>>());
}

#[test]
fn batches_do_not_depend_on_thread_count() {
    let loader = train_loader(synthetic(50), 16, 1);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| epoch_data(&loader, 4))
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
}

#[test]
fn resume_mid_epoch_reproduces_the_tail() {
    let loader = train_loader(synthetic(50), 8, 5);
    let full = epoch_data(&loader, 3);
    assert_eq!(full.len(), 7);
    let iter = loader.epoch_from(3, 4).unwrap();
    assert_eq!((iter.position(), iter.len()), (4, 3));
    let tail: Vec<_> = iter
        .map(|b| {
            let b = b.unwrap();
            (
                b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.labels.to_vec1::<u32>().unwrap(),
                b.indices,
            )
        })
        .collect();
    assert_eq!(tail, full[4..].to_vec());
    // A single batch on its own is the same too.
    let b5 = loader.batch(3, 5).unwrap();
    assert_eq!((b5.epoch, b5.index), (3, 5));
    assert_eq!(b5.indices, full[5].2);
    assert_eq!(loader.epoch_from(3, 7).unwrap().count(), 0);
    let err = loader.epoch_from(3, 8).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::BatchOutOfRange {
                index: 8,
                batches: 7
            }
        ),
        "{err:?}"
    );
    assert!(loader
        .batch(0, 7)
        .unwrap_err()
        .to_string()
        .contains("batch 7 requested, but an epoch has 7 batches"));
}

#[test]
fn batch_counts_and_drop_last() {
    let keep = train_loader(synthetic(50), 16, 0);
    assert_eq!(
        (keep.batches_per_epoch(), keep.samples_per_epoch()),
        (4, 50)
    );
    let sizes: Vec<usize> = keep.epoch(0).map(|b| b.unwrap().indices.len()).collect();
    assert_eq!(sizes, vec![16, 16, 16, 2]);
    let drop = Loader::new(
        synthetic(50),
        LoaderConfig::train(DatasetKind::Cifar10, 16, 0).with_drop_last(true),
    )
    .unwrap();
    assert_eq!(
        (drop.batches_per_epoch(), drop.samples_per_epoch()),
        (3, 48)
    );
    assert_eq!(drop.epoch(0).len(), 3);
    let mut seen: Vec<usize> = keep.epoch(1).flat_map(|b| b.unwrap().indices).collect();
    seen.sort();
    assert_eq!(
        seen,
        (0..50).collect::<Vec<_>>(),
        "an epoch visits every image once"
    );
}

#[test]
fn eval_mode_is_normalised_raw_images() {
    let ds = synthetic(20);
    let norm = Normalize::for_kind(DatasetKind::Cifar10);
    let eval = Loader::new(ds.clone(), LoaderConfig::eval(DatasetKind::Cifar10, 6)).unwrap();
    let mut i = 0;
    for batch in eval.epoch(9) {
        let batch = batch.unwrap();
        assert_eq!(batch.images.dims()[1..], [3, 8, 8]);
        let images = batch
            .images
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (k, img) in images.chunks(192).enumerate() {
            assert_eq!(batch.indices[k], i);
            assert_eq!(img, normalised(&ds, &norm, i).as_slice());
            i += 1;
        }
        assert_eq!(
            batch.labels.to_vec1::<u32>().unwrap(),
            batch
                .indices
                .iter()
                .map(|&j| (j % 10) as u32)
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(i, 20);

    // A training loader switched to eval mode keeps its order, drops augmentation.
    let mut train = train_loader(ds.clone(), 6, 3);
    let augmented = epoch_data(&train, 0);
    train.set_mode(Mode::Eval);
    let plain = epoch_data(&train, 0);
    assert_ne!(augmented, plain);
    for (images, _, indices) in &plain {
        for (img, &j) in images.chunks(192).zip(indices) {
            assert_eq!(img, normalised(&ds, &norm, j).as_slice());
        }
    }
}

#[test]
fn train_mode_values_come_from_image_or_padding() {
    let ds = synthetic(30);
    let norm = Normalize::for_kind(DatasetKind::Cifar10);
    let loader = Loader::new(
        ds.clone(),
        LoaderConfig::train(DatasetKind::Cifar10, 10, 2).with_pad(3),
    )
    .unwrap();
    let mut changed = 0;
    for (images, _, indices) in epoch_data(&loader, 1) {
        for (img, &j) in images.chunks(192).zip(&indices) {
            let raw = normalised(&ds, &norm, j);
            changed += usize::from(img != raw.as_slice());
            for (k, v) in img.iter().enumerate() {
                let c = k / 64;
                let pad = Normalize::value(0, norm.mean[c], norm.std[c]);
                let in_channel = &raw[c * 64..(c + 1) * 64];
                assert!(
                    *v == pad || in_channel.contains(v),
                    "value {v} from nowhere"
                );
            }
        }
    }
    assert!(changed > 20, "only {changed} of 30 images augmented");
    // Flip off and pad 0: training batches equal eval batches.
    let none = Loader::new(
        ds,
        LoaderConfig::train(DatasetKind::Cifar10, 10, 2).with_augment(Augment::none()),
    )
    .unwrap();
    let mut eval = none.clone();
    eval.set_mode(Mode::Eval);
    assert_eq!(epoch_data(&none, 1), epoch_data(&eval, 1));
}

#[test]
fn bad_configs_are_errors() {
    let err = Loader::new(
        synthetic(5),
        LoaderConfig::train(DatasetKind::Cifar10, 0, 0),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("synthetic") && err.to_string().contains("batch size 0"),
        "{err}"
    );
    // MNIST statistics (1 channel) on a 3-channel dataset.
    let err = Loader::new(synthetic(5), LoaderConfig::train(DatasetKind::Mnist, 4, 0)).unwrap_err();
    assert!(
        err.to_string().contains("expected 3 (one per channel)"),
        "{err}"
    );
    let zero_std = Normalize {
        mean: vec![0.0; 3],
        std: vec![1.0, 0.0, 1.0],
    };
    let err = Loader::new(
        synthetic(5),
        LoaderConfig::train(DatasetKind::Cifar10, 4, 0).with_normalize(zero_std),
    )
    .unwrap_err();
    assert!(err.to_string().contains("std 0"), "{err}");
    let loader = train_loader(synthetic(5), 4, 0);
    assert!(loader
        .batch_of(0, 0, &[1, 5])
        .unwrap_err()
        .to_string()
        .contains("sample index 5"));
    // A dataset whose public fields were edited into disagreement.
    let mut broken = synthetic(5);
    broken.labels[2] = 10;
    let err = Loader::new(broken, LoaderConfig::train(DatasetKind::Cifar10, 4, 0)).unwrap_err();
    assert!(err.to_string().contains("label 10 at sample 2"), "{err}");
}

#[test]
fn embedded_batches() {
    let splits = DataSource::Embedded.load().unwrap();
    let test_len = splits.test.n;
    let train = Loader::new(
        splits.train,
        LoaderConfig::train(DatasetKind::FashionMnist, 128, 0),
    )
    .unwrap();
    assert_eq!(train.batches_per_epoch(), 79);
    let batch = train.batch(0, 78).unwrap();
    assert_eq!(batch.images.dims(), &[16, 1, 28, 28]);
    assert_eq!(batch.images.dtype(), candle_core::DType::F32);
    assert_eq!(batch.labels.dims(), &[16]);
    assert_eq!(batch.labels.dtype(), candle_core::DType::U32);
    let test = Loader::new(
        splits.test,
        LoaderConfig::eval(DatasetKind::FashionMnist, 500),
    )
    .unwrap();
    assert_eq!(
        test.epoch(0)
            .map(|b| b.unwrap().indices.len())
            .sum::<usize>(),
        test_len
    );
    // Normalised over the subset: mean near 0, std near 1.
    let all = test.batch(0, 0).unwrap().images;
    let mean = all.mean_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(mean.abs() < 0.05, "mean {mean}");
}
