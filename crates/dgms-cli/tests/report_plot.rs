//! `dgms report --plot DIR`: one real PNG per mixture layer (named after
//! the layer, 960 x 600, with the histogram, the trained mixture's curves
//! and text drawn), none for the layers kept in fp32, the same for a
//! hardened checkpoint (without curves), and an unusable DIR is an error
//! naming it.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{dgms_err, dgms_ok, path_str as s, pretrained};
use dgms_train::train::checkpoint;
use dgms_train::train::trainer::LAST;
use image::RgbImage;

/// The layers given a mixture: the rest (conv1, the other convs, fc) stay
/// in fp32.
const MIXTURE_LAYERS: [&str; 2] = ["layer1.0.conv1", "layer3.2.conv2"];
/// dgms-plot's picture size.
const SIZE: (u32, u32) = (960, 600);

/// A tiny DGMS run's checkpoint (K = 4, two mixture layers, one batch),
/// trained once for every test of this file, under cargo's tmp folder.
fn dgms_checkpoint() -> &'static Path {
    static CKPT: OnceLock<PathBuf> = OnceLock::new();
    CKPT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("report-plot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let run = dir.join("run");
        let layers = MIXTURE_LAYERS.join(",");
        dgms_ok(&[
            "dgms",
            "--init",
            s(&pretrained()),
            "--k",
            "4",
            "--layers",
            &layers,
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--max-batches",
            "1",
            "--max-eval",
            "16",
            "--out",
            s(&run),
        ]);
        run.join(LAST)
    })
}

/// The names of the files in `dir`.
fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Decodes `path` as a PNG of [`SIZE`] that is not blank.
fn check_picture(path: &Path) -> RgbImage {
    let img = image::ImageReader::open(path)
        .unwrap()
        .with_guessed_format()
        .unwrap();
    assert_eq!(
        img.format(),
        Some(image::ImageFormat::Png),
        "{}",
        path.display()
    );
    let img = img.decode().unwrap().to_rgb8();
    assert_eq!(img.dimensions(), SIZE, "{}", path.display());
    let colours: BTreeSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() >= 8,
        "{}: {} distinct colours, a blank picture?",
        path.display(),
        colours.len()
    );
    let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 80)).count();
    assert!(
        dark > 500,
        "{}: {dark} dark pixels, no text or axes?",
        path.display()
    );
    img
}

/// Pixels of the first curve's colour (dgms-plot's red).
fn red_pixels(img: &RgbImage) -> usize {
    img.pixels()
        .filter(|p| p.0[0] > 180 && p.0[1] < 80 && p.0[2] < 80)
        .count()
}

#[test]
fn one_picture_per_mixture_layer() {
    let ckpt = dgms_checkpoint();
    let meta = checkpoint::load_meta(ckpt).unwrap();
    let mixture_layers: BTreeSet<&str> = meta.mixture_k.keys().map(String::as_str).collect();
    assert_eq!(mixture_layers, BTreeSet::from(MIXTURE_LAYERS));

    let dir = tempfile::tempdir().unwrap();
    // Two levels below the temporary folder: created by the command.
    let plots = dir.path().join("plots/report");
    let text = dgms_ok(&["report", "--checkpoint", s(ckpt), "--plot", s(&plots)]);
    let expected: BTreeSet<String> = MIXTURE_LAYERS.iter().map(|l| format!("{l}.png")).collect();
    assert_eq!(files_in(&plots), expected, "no temporary file is left");
    for layer in MIXTURE_LAYERS {
        let path = plots.join(format!("{layer}.png"));
        assert!(
            text.contains(&format!("wrote {}", path.display())),
            "{text}"
        );
        let img = check_picture(&path);
        // The trained mixture's curves are drawn.
        let red = red_pixels(&img);
        assert!(red > 200, "{layer}: {red} red pixels, no mixture curve?");
    }
    // The report itself is unchanged.
    assert!(
        text.contains("As the DGMS authors' code reports it:"),
        "{text}"
    );
}

#[test]
fn fp32_layers_have_no_picture() {
    let ckpt = dgms_checkpoint();
    let dir = tempfile::tempdir().unwrap();
    let plots = dir.path().join("plots");
    dgms_ok(&["report", "--checkpoint", s(ckpt), "--plot", s(&plots)]);
    let files = files_in(&plots);
    // conv1 (the first conv), the other convs and the classifier are fp32.
    for fp32 in [
        "conv1",
        "layer1.0.conv2",
        "layer2.0.conv1",
        "layer3.2.conv1",
        "fc",
    ] {
        assert!(
            !files.contains(&format!("{fp32}.png")),
            "{fp32} is fp32 but has a picture: {files:?}"
        );
    }
    assert_eq!(files.len(), MIXTURE_LAYERS.len(), "{files:?}");
}

#[test]
fn a_hardened_checkpoint_gets_its_levels_without_curves() {
    let ckpt = dgms_checkpoint();
    let dir = tempfile::tempdir().unwrap();
    let hard = dir.path().join("hard.safetensors");
    dgms_ok(&[
        "harden",
        "--checkpoint",
        s(ckpt),
        "--out",
        s(&hard),
        "--recalibrate-bn",
        "0",
    ]);
    let plots = dir.path().join("plots");
    dgms_ok(&["report", "--checkpoint", s(&hard), "--plot", s(&plots)]);
    let expected: BTreeSet<String> = MIXTURE_LAYERS.iter().map(|l| format!("{l}.png")).collect();
    assert_eq!(files_in(&plots), expected);
    for layer in MIXTURE_LAYERS {
        let img = check_picture(&plots.join(format!("{layer}.png")));
        // A hardened checkpoint keeps no mixture: no curve is drawn.
        assert_eq!(red_pixels(&img), 0, "{layer}: a curve without a mixture?");
    }
}

#[test]
fn an_unusable_plot_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // A directory cannot be made below a regular file (even as root).
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let plots = file.join("plots");
    let err = dgms_err(&[
        "report",
        "--checkpoint",
        s(&pretrained()),
        "--plot",
        s(&plots),
    ]);
    assert!(
        err.starts_with(&format!(
            "error: --plot {}: cannot create the directory",
            plots.display()
        )),
        "{err}"
    );
}
