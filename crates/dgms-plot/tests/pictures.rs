//! The pictures are real PNGs of the expected size, drawn with the
//! embedded font, and bad data is an error naming the layer.

use dgms_core::MixtureParams;
use dgms_plot::{layer_png, top1_bars_png, LayerPlot, MixtureCurve, WidthTop1};
use image::GenericImageView;

fn params() -> MixtureParams {
    MixtureParams {
        mu: vec![-0.1, 0.1],
        sigma: vec![0.03, 0.03],
        pi: vec![0.3, 0.3],
        pi_zero: 0.4,
        sigma_zero: 0.02,
        tau: 0.01,
    }
}

fn weights() -> Vec<f32> {
    // Three clumps around -0.1, 0 and 0.1.
    (0..3000)
        .map(|i| [-0.1f32, 0.0, 0.1][i % 3] + ((i * 7919 % 101) as f32 - 50.0) * 4e-4)
        .collect()
}

#[test]
fn layer_and_bar_pictures_are_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer1.0.conv1.png");
    let w = weights();
    let plot = LayerPlot {
        layer: "layer1.0.conv1",
        weights: &w,
        curves: vec![
            MixtureCurve {
                label: "initialisation".into(),
                params: params(),
            },
            MixtureCurve {
                label: "after DGMS".into(),
                params: MixtureParams {
                    sigma: vec![0.02, -0.025],
                    ..params()
                },
            },
        ],
        levels: Some(vec![-0.1, 0.0, 0.1]),
    };
    layer_png(&path, &plot).unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (960, 600));
    // Something besides the white background and the grey bars: the
    // coloured curves and dark text.
    let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 80)).count();
    let red = img.pixels().filter(|p| p.0[0] > 180 && p.0[1] < 80).count();
    assert!(dark > 500, "{dark} dark pixels: no text or axes?");
    assert!(red > 200, "{red} red pixels: no first curve?");

    let bars = dir.path().join("top1.png");
    let widths = [
        WidthTop1 {
            label: "4-bit".into(),
            ptq: 87.6,
            lsq: None,
            dgms: 88.6,
        },
        WidthTop1 {
            label: "2-bit".into(),
            ptq: 17.4,
            lsq: None,
            dgms: 87.3,
        },
    ];
    // The baseline's green (PALETTE[2]) appears only when it was run.
    let green = |path: &std::path::Path| {
        let img = image::open(path).unwrap().to_rgb8();
        img.pixels().filter(|p| p.0 == [44, 160, 44]).count()
    };
    top1_bars_png(&bars, 88.3, &widths).unwrap();
    assert_eq!(image::open(&bars).unwrap().dimensions(), (960, 600));
    assert_eq!(green(&bars), 0);
    let mut with_lsq = widths.clone();
    with_lsq[0].lsq = Some(87.9);
    with_lsq[1].lsq = Some(80.1);
    top1_bars_png(&bars, 88.3, &with_lsq).unwrap();
    assert!(
        green(&bars) > 2_000,
        "{} green pixels: no LSQ bars?",
        green(&bars)
    );
}

#[test]
fn bad_data_is_an_error_naming_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.png");
    let nan = [0.1f32, f32::NAN];
    let plot = LayerPlot {
        layer: "layer2.1.conv2",
        weights: &nan,
        curves: vec![],
        levels: None,
    };
    let err = layer_png(&path, &plot).unwrap_err().to_string();
    assert!(
        err.contains("layer2.1.conv2") && err.contains("NaN"),
        "{err}"
    );
    let plot = LayerPlot {
        layer: "empty",
        weights: &[],
        curves: vec![],
        levels: None,
    };
    assert!(layer_png(&path, &plot).is_err());
    assert!(!path.exists(), "no half-written picture");
    assert!(top1_bars_png(&path, 88.0, &[]).is_err());
}
