//! The loader decodes and resizes in buffers each thread keeps from one
//! image to the next. Nothing of one image may show in another: a batch
//! that mixes large and small images, greyscale, PNG, corrupt, truncated
//! and non-image files gives, image for image, what decoding each file
//! alone gives, and skips the same files for the same reasons.

use std::path::Path;

use candle_core::Tensor;
use dgms_data::{
    decode_rgb, EvalTransform, FileSplit, ImageTransform, Loader, LoaderConfig, Mode, Split,
    TrainCrop,
};
use image::codecs::jpeg::JpegEncoder;
use image::ExtendedColorType;

fn pixels(w: u32, h: u32, channels: u32, salt: u32) -> Vec<u8> {
    (0..w * h * channels)
        .map(|i| {
            let (x, y) = ((i / channels) % w, (i / channels) / w);
            ((x * 7 + y * 3 + (i % channels) * 50 + salt * 31 + (x * y) % 13) % 256) as u8
        })
        .collect()
}

fn jpeg(w: u32, h: u32, colour: ExtendedColorType, salt: u32) -> Vec<u8> {
    let channels = if colour == ExtendedColorType::L8 {
        1
    } else {
        3
    };
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90)
        .encode(&pixels(w, h, channels, salt), w, h, colour)
        .unwrap();
    out
}

/// A folder whose file order puts small images after large ones and bad
/// files in between.
fn write_folder(root: &Path) {
    let dir = root.join("c");
    std::fs::create_dir_all(&dir).unwrap();
    let rgb = ExtendedColorType::Rgb8;
    let big = jpeg(310, 230, rgb, 1);
    // Scan data overwritten but the end marker kept: past the truncation
    // check, into the decoder.
    let mut corrupt = big.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid..mid + 400].fill(0x5A);
    let mut png = Vec::new();
    image::RgbImage::from_raw(70, 90, pixels(70, 90, 3, 4))
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a_big.JPEG", big.clone()),
        ("b_corrupt.JPEG", corrupt),
        ("c_small.JPEG", jpeg(80, 72, rgb, 2)),
        ("d_truncated.JPEG", big[..big.len() * 2 / 3].to_vec()),
        ("e_grey.JPEG", jpeg(260, 200, ExtendedColorType::L8, 3)),
        ("f_png.JPEG", png),
        ("g_text.JPEG", b"not an image".to_vec()),
        ("h_tall.JPEG", jpeg(75, 300, rgb, 5)),
        ("i_small.JPEG", jpeg(72, 72, rgb, 6)),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Runs `f` on a new one-thread pool: a new thread, so fresh buffers.
fn one_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn reused_buffers_leak_nothing_between_images() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path());
    let root = dir.path().to_path_buf();
    for train_crop in [TrainCrop::ResizeRandomCrop, TrainCrop::RandomResized] {
        let transform = ImageTransform {
            resize: 72,
            crop: 64,
            train_crop,
        };
        let files = FileSplit::scan("reuse", &root, transform).unwrap();
        let samples = files.folder.samples.clone();
        let split = Split::from(files);
        let per_image = 3 * 64 * 64;

        // Evaluation: every image as decoded and transformed on its own,
        // with fresh buffers throughout.
        let eval = Loader::new(
            split.clone(),
            LoaderConfig::for_split(&split, Mode::Eval, samples.len(), 0),
        )
        .unwrap();
        let batch = one_thread(|| eval.batch(0, 0).unwrap());
        let images = values(&batch.images);
        let reference = EvalTransform {
            resize: 72,
            crop: 64,
            ..EvalTransform::default()
        };
        let mut expected_kept = Vec::new();
        let mut expected_skipped = Vec::new();
        for (i, (path, _)) in samples.iter().enumerate() {
            match decode_rgb(path) {
                Ok(img) => expected_kept.push((i, reference.apply(&img).unwrap())),
                Err(e) => expected_skipped.push((path.clone(), e.to_string())),
            }
        }
        assert_eq!(
            batch.indices,
            expected_kept.iter().map(|(i, _)| *i).collect::<Vec<_>>()
        );
        for (k, (i, want)) in expected_kept.iter().enumerate() {
            let got = &images[k * per_image..(k + 1) * per_image];
            assert_eq!(got, &want[..], "{train_crop:?}: image {i}");
        }
        // Truncated, text, and the corrupt one unless the decoder accepts it
        // (then it was compared above).
        assert!(expected_skipped.len() >= 2, "{expected_skipped:?}");
        assert_eq!(split.skipped(), expected_skipped);

        // Training: the whole batch on one thread (each image after the
        // others in the same buffers) equals each image in a batch of its
        // own on a new thread (fresh buffers).
        let train = Loader::new(
            split.clone(),
            LoaderConfig::for_split(&split, Mode::Train, samples.len(), 9),
        )
        .unwrap();
        let all: Vec<usize> = (0..samples.len()).collect();
        let together = one_thread(|| train.batch_of(3, 0, &all).unwrap());
        let together_values = values(&together.images);
        assert_eq!(together.indices, batch.indices);
        for (k, &i) in together.indices.iter().enumerate().rev() {
            let alone = one_thread(|| train.batch_of(3, 0, &[i]).unwrap());
            assert_eq!(
                values(&alone.images),
                &together_values[k * per_image..(k + 1) * per_image],
                "{train_crop:?}: image {i}"
            );
        }
    }
}
