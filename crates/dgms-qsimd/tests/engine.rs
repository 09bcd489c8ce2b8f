//! The inference engine on synthetic packed models of every supported
//! architecture: every ISA this CPU runs against the reference engine
//! (decoded f32 weights, scalar kernels), batch independence and buffer
//! reuse, and the errors for bad models and inputs.

mod engine_util;

use dgms_qsimd::engine::{reference, Engine, SUPPORTED_ARCHS};
use dgms_qsimd::format::PackedModel;
use dgms_qsimd::kernels::Isa;
use dgms_qsimd::QsimdError;
use dgms_test_support::compare::rel_diff;
use engine_util::{images, mnasnet1_0, mobilenet_v2, resnet18, resnet50, resnet_cifar, vgg_small};

const TOLERANCE: f32 = 1e-4;

/// Every available ISA against the reference on `n` images; returns the
/// worst relative difference.
fn check_against_reference(model: &PackedModel, n: usize) -> f32 {
    let shape: [usize; 3] = model.meta.input_shape.as_slice().try_into().unwrap();
    let x = images(n, shape, 7);
    let want = reference::engine(model).unwrap().run(&x, n).unwrap();
    assert_eq!(want.len(), n * model.meta.num_classes);
    assert!(want.iter().all(|v| v.is_finite()));
    assert!(want.iter().any(|&v| v != 0.0), "degenerate logits");
    // A random model whose features died gives every image the same logits.
    let classes = model.meta.num_classes;
    if n > 1 {
        assert!(
            rel_diff(&want[..classes], &want[classes..2 * classes]) > 1e-3,
            "{}: two images give the same logits",
            model.meta.arch
        );
    }
    let mut worst = 0.0f32;
    for isa in Isa::available() {
        let mut engine = Engine::new(model, isa).unwrap();
        assert_eq!(engine.isa(), isa);
        let got = engine.run(&x, n).unwrap();
        let d = rel_diff(&got, &want);
        println!("{} on {isa}: max rel diff {d:.2e}", model.meta.arch);
        assert!(d <= TOLERANCE, "{} on {isa}: {d}", model.meta.arch);
        worst = worst.max(d);
    }
    worst
}

#[test]
fn resnet_cifar_matches_reference() {
    check_against_reference(&resnet_cifar(3, [3, 32, 32], 10, 1), 3);
    // Fashion-MNIST shape; odd maps through the stride-2 stages (28 -> 14 -> 7).
    check_against_reference(&resnet_cifar(3, [1, 28, 28], 10, 2), 2);
    check_against_reference(&resnet_cifar(5, [3, 16, 16], 7, 3), 2);
    check_against_reference(&resnet_cifar(9, [3, 12, 12], 10, 4), 2);
}

#[test]
fn vgg_small_matches_reference() {
    check_against_reference(&vgg_small(16, 10, 5), 2);
    // 20 -> 10 -> 5 -> 2: pools round down.
    check_against_reference(&vgg_small(20, 3, 6), 1);
}

#[test]
fn resnet18_matches_reference() {
    check_against_reference(&resnet18(32, 10, 8), 2);
    check_against_reference(&resnet18(45, 5, 9), 1);
}

#[test]
fn mobilenet_v2_matches_reference() {
    check_against_reference(&mobilenet_v2(32, 10, 15), 2);
    // 36 -> 18 -> 9 -> 5 -> 3 -> 2: odd maps through the strided depthwise.
    check_against_reference(&mobilenet_v2(36, 5, 16), 1);
}

#[test]
fn mnasnet1_0_matches_reference() {
    // 32 -> 16 -> 8 -> 4 -> 2 -> 1: 5x5 depthwise convs on maps smaller
    // than their kernel (all but the centre taps in the padding).
    check_against_reference(&mnasnet1_0(32, 10, 17), 2);
    // 44 -> 22 -> 11 -> 6 -> 3 -> 2: odd maps through the strided 3x3 and
    // 5x5 depthwise convs.
    check_against_reference(&mnasnet1_0(44, 5, 18), 1);
}

#[test]
fn resnet50_matches_reference() {
    check_against_reference(&resnet50(32, 10, 13), 2);
    // 40 -> 20 -> 10 -> 5 -> 3 -> 2: odd maps through the strided 3x3s.
    check_against_reference(&resnet50(40, 7, 14), 1);
}

#[test]
fn every_arch_is_covered() {
    for arch in SUPPORTED_ARCHS {
        assert!(
            [
                "resnet20",
                "resnet32",
                "resnet56",
                "vggsmall",
                "resnet18",
                "resnet50",
                "mobilenet_v2",
                "mnasnet1_0",
            ]
            .contains(&arch),
            "{arch} has no test"
        );
    }
}

/// Logits of an image do not depend on the batch it runs in, on earlier
/// calls (buffers are reused and grown) or on the split into passes.
#[test]
fn batches_are_independent_and_buffers_reused() {
    let model = resnet_cifar(3, [1, 28, 28], 10, 11);
    let x = images(5, [1, 28, 28], 12);
    let image = 28 * 28;
    let mut engine = Engine::new(&model, Isa::detect()).unwrap();
    let all = engine.run(&x, 5).unwrap();
    let first = engine.run(&x[..image], 1).unwrap();
    assert!(rel_diff(&first, &all[..10]) <= 1e-6);
    let three = engine.run(&x[2 * image..], 3).unwrap();
    assert!(rel_diff(&three, &all[20..]) <= 1e-6);
    let again = engine.run(&x, 5).unwrap();
    assert!(rel_diff(&again, &all) <= 1e-6);
    // One image per pass.
    engine.set_workspace_limit(1);
    assert_eq!(engine.max_images_per_pass(), 1);
    let split = engine.run(&x, 5).unwrap();
    assert!(rel_diff(&split, &all) <= 1e-6);
    engine.set_workspace_limit(2 * engine.workspace_bytes_per_image());
    assert_eq!(engine.max_images_per_pass(), 2);
    let split = engine.run(&x, 5).unwrap();
    assert!(rel_diff(&split, &all) <= 1e-6);
    assert_eq!(engine.run(&[], 0).unwrap(), Vec::<f32>::new());
}

fn build_err(model: &PackedModel) -> String {
    match Engine::new(model, Isa::Scalar) {
        Ok(_) => panic!("expected an error for {}", model.meta.arch),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_arch_is_an_error() {
    let mut model = resnet_cifar(3, [3, 8, 8], 10, 20);
    model.meta.arch = "resnet99".into();
    let err = Engine::new(&model, Isa::Scalar).unwrap_err();
    assert!(matches!(err, QsimdError::UnknownArch { .. }));
    let msg = err.to_string();
    assert!(msg.contains("unknown architecture `resnet99`"), "{msg}");
    assert!(
        msg.contains("resnet20, resnet32, resnet56, vggsmall, resnet18"),
        "{msg}"
    );
    assert!(reference::engine(&model).is_err());
}

#[test]
fn build_errors_keep_their_cause() {
    // A hand-edited layer with indices beyond K: the engine's error names
    // the layer and keeps the format's error as its source.
    let mut m = resnet_cifar(3, [3, 8, 8], 10, 21);
    let layer = m
        .layers
        .iter_mut()
        .find(|l| l.name == "layer1.0.conv1")
        .unwrap();
    layer.packed.fill(0xFF);
    layer.k = 9;
    layer.codebook.truncate(9);
    let err = Engine::new(&m, Isa::Scalar).unwrap_err();
    assert!(
        matches!(&err, QsimdError::InGraph { layer, .. } if layer == "layer1.0.conv1"),
        "{err:?}"
    );
    let source = std::error::Error::source(&err).expect("a source");
    // Boxed (the enum nests itself); the box displays as its content.
    let cause = source
        .downcast_ref::<Box<QsimdError>>()
        .expect("a QsimdError");
    assert!(
        matches!(**cause, QsimdError::IndexOutOfRange { k: 9, .. }),
        "{cause:?}"
    );
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let base = resnet_cifar(3, [3, 8, 8], 10, 21);

    let mut m = base.clone();
    m.layers.retain(|l| l.name != "layer2.1.conv2");
    let msg = build_err(&m);
    assert!(
        msg.contains("resnet20: layer2.1.conv2: missing")
            && msg.contains("`layer2.1.conv2.weight` of shape [32, 32, 3, 3]"),
        "{msg}"
    );

    let mut m = base.clone();
    m.tensors.remove("linear.bias");
    let msg = build_err(&m);
    assert!(
        msg.contains("linear: missing full-precision tensor `linear.bias` of shape [10]"),
        "{msg}"
    );

    let mut m = base.clone();
    m.tensors.remove("layer3.0.bn1.scale");
    m.tensors.remove("layer3.0.bn1.shift");
    let msg = build_err(&m);
    assert!(
        msg.contains("layer3.0.bn1: missing full-precision tensor `layer3.0.bn1.scale`"),
        "{msg}"
    );

    // Classes in the metadata disagree with the classifier.
    let mut m = base.clone();
    m.meta.num_classes = 11;
    let msg = build_err(&m);
    assert!(
        msg.contains("linear.weight has shape [10, 64], expected [11, 64]"),
        "{msg}"
    );

    // Input channels disagree with the stem.
    let mut m = base.clone();
    m.meta.input_shape = vec![1, 8, 8];
    let msg = build_err(&m);
    assert!(
        msg.contains("conv1.weight has shape [16, 3, 3, 3], expected [16, 1, 3, 3]"),
        "{msg}"
    );

    // A file for a deeper model: resnet32's layers under the resnet20 name.
    let mut m = resnet_cifar(5, [3, 8, 8], 10, 22);
    m.meta.arch = "resnet20".into();
    let msg = build_err(&m);
    assert!(
        msg.contains("layer1.3.conv1") && msg.contains("does not use"),
        "{msg}"
    );

    // A hand-edited layer with indices beyond K: an error, not a panic.
    let mut m = base.clone();
    let layer = m
        .layers
        .iter_mut()
        .find(|l| l.name == "layer1.0.conv1")
        .unwrap();
    layer.packed.fill(0xFF);
    layer.k = 9;
    layer.codebook.truncate(9);
    let msg = build_err(&m);
    assert!(
        msg.contains("layer1.0.conv1") && msg.contains(">= K = 9"),
        "{msg}"
    );

    // Too small an input for VGG-Small's three pools.
    let mut m = vgg_small(16, 10, 23);
    m.meta.input_shape = vec![3, 4, 4];
    let msg = build_err(&m);
    assert!(msg.contains("vggsmall: features."), "{msg}");
}

#[test]
fn wrong_input_is_an_error() {
    let model = resnet_cifar(3, [3, 8, 8], 10, 30);
    let mut engine = Engine::new(&model, Isa::detect()).unwrap();
    let err = engine.run(&vec![0.0; 3 * 8 * 8 * 2 - 1], 2).unwrap_err();
    assert!(matches!(err, QsimdError::Input { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("383 values for 2 images of 3x8x8 (384 expected"),
        "{msg}"
    );
    assert!(engine.run(&vec![0.0; 192], usize::MAX).is_err());
    // The engine still works after the error.
    assert_eq!(engine.run(&vec![0.0; 192], 1).unwrap().len(), 10);
}

#[test]
fn unavailable_isa_is_an_error() {
    let model = resnet_cifar(3, [3, 8, 8], 10, 31);
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        let msg = Engine::new(&model, isa).unwrap_err().to_string();
        assert!(msg.contains("not available"), "{msg}");
    }
}
