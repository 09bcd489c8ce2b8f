//! Image folders against torchvision's conventions and Pillow's numbers:
//! the ImageFolder order, decoding (greyscale, CMYK, a PNG named .JPEG, a
//! truncated JPEG) and the evaluation transform, compared with
//! `fixtures/pillow-reference/imagenet-mini-val-128-112.safetensors`
//! (`scripts/pillow_reference.py fixtures/imagenet-mini/val OUT --resize
//! 128 --crop 112`, Pillow 13.0.0).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use dgms_data::folder::has_image_extension;
use dgms_data::image_transform::{crop_offset, resized_size};
use dgms_data::{decode_rgb, DataError, EvalTransform, ImageFolder};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn fixture(split: &str) -> PathBuf {
    repo("fixtures/imagenet-mini").join(split)
}

fn names(folder: &ImageFolder) -> Vec<(String, u32)> {
    folder
        .samples
        .iter()
        .map(|(p, l)| {
            let rel = p.strip_prefix(&folder.root).unwrap();
            (rel.to_string_lossy().into_owned(), *l)
        })
        .collect()
}

#[test]
fn folders_are_listed_in_image_folder_order() {
    let train = ImageFolder::scan(&fixture("train")).unwrap();
    assert_eq!(train.classes, ["n00000001", "n00000002", "n00000003"]);
    let expected = [
        ("n00000001/astronaut.JPEG", 0),
        ("n00000001/hubble.jpeg", 0),
        ("n00000001/rocket.JPEG", 0),
        ("n00000002/camera_grey.JPEG", 1),
        ("n00000002/chelsea.JPEG", 1),
        ("n00000002/coffee.JPEG", 1),
        ("n00000003/coins_grey.JPEG", 2),
        ("n00000003/hubble_detail.JPEG", 2),
        ("n00000003/retina.jpg", 2),
        ("n00000003/truncated.JPEG", 2),
    ];
    let expected: Vec<(String, u32)> = expected.iter().map(|(n, l)| (n.to_string(), *l)).collect();
    assert_eq!(names(&train), expected);
    assert_eq!(ImageFolder::scan(&fixture("val")).unwrap().len(), 5);
}

#[test]
fn nested_folders_sort_as_os_walk_and_odd_cases_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for f in ["b/z.PNG", "b/sub/a.jpg", "b/a.txt", "a/x.Jpeg", "a/y.webp"] {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"").unwrap();
    }
    std::fs::write(root.join("stray.jpg"), b"").unwrap(); // not in a class
    let folder = ImageFolder::scan(root).unwrap();
    assert_eq!(folder.classes, ["a", "b"]);
    let got: Vec<String> = names(&folder).into_iter().map(|(n, _)| n).collect();
    // sorted(os.walk("b")): "b" before "b/sub".
    assert_eq!(got, ["a/x.Jpeg", "a/y.webp", "b/z.PNG", "b/sub/a.jpg"]);
    assert!(!has_image_extension(Path::new("a.txt")));

    std::fs::create_dir(root.join("c_empty")).unwrap();
    let err = ImageFolder::scan(root).unwrap_err();
    assert!(matches!(err, DataError::EmptyClass { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("class `c_empty` holds no image file"),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    let err = ImageFolder::scan(empty.path()).unwrap_err();
    assert!(err.to_string().contains("no class folders"), "{err}");
    let err = ImageFolder::scan(&empty.path().join("missing")).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn special_files_decode_as_pil_convert_rgb_does() {
    let val = fixture("val");
    let grey = decode_rgb(&fixture("train").join("n00000002/camera_grey.JPEG")).unwrap();
    assert_eq!((grey.width, grey.height), (512, 512));
    assert!(grey.pixels.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    let png = decode_rgb(&val.join("n00000002/chelsea_png_named_jpeg.JPEG")).unwrap();
    assert_eq!((png.width, png.height), (320, 213));
    let cmyk = decode_rgb(&val.join("n00000002/coffee_cmyk.JPEG")).unwrap();
    assert_eq!((cmyk.width, cmyk.height), (400, 300));
    let err = decode_rgb(&fixture("train").join("n00000003/truncated.JPEG")).unwrap_err();
    assert!(matches!(err, DataError::Undecodable { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("truncated.JPEG: cannot decode the image: truncated JPEG"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.jpg");
    std::fs::write(&text, b"not an image at all").unwrap();
    assert!(matches!(
        decode_rgb(&text),
        Err(DataError::Undecodable { .. })
    ));
}

#[test]
fn sizes_and_crops_follow_torchvision() {
    assert_eq!(resized_size(500, 375, 256), (341, 256));
    assert_eq!(resized_size(375, 500, 256), (256, 341));
    assert_eq!(resized_size(260, 512, 256), (256, 504));
    // (257 - 224) / 2 = 16.5: Python's round gives 16 (ties to even).
    assert_eq!(crop_offset(257, 224), 16);
    assert_eq!(crop_offset(259, 224), 18);
    assert_eq!(crop_offset(256, 224), 16);
}

/// The reference tensors by name and the (resize, crop) they were made
/// with: the committed file, or `$DGMS_PILLOW_REFERENCE` (e.g. one made at
/// 256 / 224 by `scripts/pillow_reference.py`).
fn reference() -> (HashMap<String, Tensor>, u32, u32) {
    let path = match std::env::var_os("DGMS_PILLOW_REFERENCE") {
        Some(p) => PathBuf::from(p),
        None => repo("fixtures/pillow-reference/imagenet-mini-val-128-112.safetensors"),
    };
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap_or_default();
    let size = |k: &str| meta[k].parse::<u32>().unwrap();
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    (tensors, size("resize"), size("crop"))
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Largest and mean absolute difference.
fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let d: Vec<f32> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
    let max = d.iter().copied().fold(0.0, f32::max);
    (max, d.iter().sum::<f32>() / d.len() as f32)
}

#[test]
fn decoding_and_the_eval_transform_match_pillow() {
    let (reference, resize, crop) = reference();
    println!("Pillow reference at resize {resize}, crop {crop}");
    let folder = ImageFolder::scan(&fixture("val")).unwrap();
    let transform = EvalTransform {
        resize,
        crop,
        ..EvalTransform::default()
    };
    let one_level = 1.0 / 255.0 / 0.224; // one u8 step after normalisation
    for (path, _) in &folder.samples {
        let key = path
            .strip_prefix(&folder.root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let img = decode_rgb(path).unwrap();
        let (dec_max, dec_mean) = diff(
            &img.pixels.iter().map(|&v| f32::from(v)).collect::<Vec<_>>(),
            &values(&reference[&format!("decoded/{key}")]),
        );
        let out = transform.apply(&img).unwrap();
        let (eval_max, eval_mean) = diff(&out, &values(&reference[&format!("eval/{key}")]));
        println!(
            "{key:45} decode max {dec_max:3.0} mean {dec_mean:.4} | eval max {eval_max:.4} ({:.1} levels) mean {eval_mean:.5}",
            eval_max / one_level
        );
        if key.ends_with(".png") || key.contains("png_named") {
            // Same pixels in: only the resize can differ.
            assert_eq!(dec_max, 0.0, "{key}: PNG decoding differs");
            assert!(
                eval_max <= 1.01 * one_level,
                "{key}: resize differs by {eval_max}"
            );
        }
    }
}
