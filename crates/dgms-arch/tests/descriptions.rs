//! Every description: parameter counts (the papers' and torchvision's,
//! which dgms-models' tests also check against the candle models built from
//! these descriptions), unique names, shapes that chain, the facts the CLI
//! asks for, and errors.

use std::collections::BTreeSet;

use dgms_arch::{
    architecture, designed_for, Activation, ArchConfig, ArchError, Architecture, Dataset, Layer,
    MODEL_NAMES,
};

fn default_arch(name: &str) -> Architecture {
    let cfg = designed_for(name).unwrap().config();
    architecture(name, &cfg).unwrap()
}

#[test]
fn parameter_counts() {
    // name, trainable parameters, convolutions.
    for (name, count, convs) in [
        ("resnet20", 269_722, 19),
        ("resnet32", 464_154, 31),
        ("resnet56", 853_018, 55),
        ("vggsmall", 4_661_898, 6),
        ("resnet18", 11_689_512, 20),
        ("resnet50", 25_557_032, 53),
        ("mobilenet_v2", 3_504_872, 52),
        ("mnasnet1_0", 4_383_312, 52),
    ] {
        let arch = default_arch(name);
        assert_eq!(arch.parameter_count(), count, "{name}");
        assert_eq!(arch.convs().len(), convs, "{name}");
        assert_eq!(arch.name, name);
    }
    let r34 = dgms_arch::resnet_imagenet::resnet(34, &Dataset::ImageNet.config()).unwrap();
    assert_eq!(r34.parameter_count(), 21_797_672);
    assert_eq!(r34.convs().len(), 36);
}

#[test]
fn names_are_unique() {
    for name in MODEL_NAMES {
        let arch = default_arch(name);
        let params = arch.parameters();
        let unique: BTreeSet<&str> = params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            unique.len(),
            params.len(),
            "{name}: a parameter name repeats"
        );
        let layers: Vec<&str> = arch
            .walk()
            .into_iter()
            .filter_map(|l| match l {
                Layer::Conv(c) => Some(c.name.as_str()),
                Layer::BatchNorm(b) => Some(b.name.as_str()),
                Layer::Linear(l) => Some(l.name.as_str()),
                Layer::MaxPool(p) => Some(p.name.as_str()),
                _ => None,
            })
            .collect();
        let unique: BTreeSet<&str> = layers.iter().copied().collect();
        assert_eq!(unique.len(), layers.len(), "{name}: a layer name repeats");
    }
}

#[test]
fn shapes_chain_for_other_inputs() {
    // Descriptions are checked when made: the shapes chain to the logits.
    for name in MODEL_NAMES {
        for cfg in [
            Dataset::Cifar10.config(),
            Dataset::ImageNet.config(),
            ArchConfig {
                in_channels: 1,
                num_classes: 7,
                image_size: 28,
            },
        ] {
            let arch = architecture(name, &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            let stem = arch.convs()[0];
            assert_eq!(stem.in_channels, cfg.in_channels, "{name}");
            let last = arch.layers.last().unwrap();
            assert!(
                matches!(last, Layer::Linear(l) if l.out_features == cfg.num_classes && l.name == arch.classifier),
                "{name}"
            );
        }
    }
    // 28 -> 14 -> 7 -> 3 after VGG-Small's three max-pools.
    let vgg = architecture(
        "vggsmall",
        &ArchConfig {
            in_channels: 1,
            num_classes: 10,
            image_size: 28,
        },
    )
    .unwrap();
    let classifier = vgg
        .parameters()
        .into_iter()
        .find(|p| p.name == "classifier.weight");
    assert_eq!(classifier.unwrap().shape, vec![10, 512 * 9]);
}

#[test]
fn answers_for_the_cli() {
    for (name, dataset, classifier, first) in [
        ("resnet20", Dataset::Cifar10, "linear.weight", "conv1"),
        ("resnet56", Dataset::Cifar10, "linear.weight", "conv1"),
        (
            "vggsmall",
            Dataset::Cifar10,
            "classifier.weight",
            "features.0",
        ),
        ("resnet18", Dataset::ImageNet, "fc.weight", "conv1"),
        ("resnet50", Dataset::ImageNet, "fc.weight", "conv1"),
        (
            "mobilenet_v2",
            Dataset::ImageNet,
            "classifier.1.weight",
            "features.0.0",
        ),
        (
            "mnasnet1_0",
            Dataset::ImageNet,
            "classifier.1.weight",
            "layers.0",
        ),
    ] {
        assert_eq!(designed_for(name).unwrap(), dataset, "{name}");
        let arch = default_arch(name);
        assert_eq!(arch.classifier_weight(), classifier, "{name}");
        assert_eq!(arch.batch_norm_eps, 1e-5);
        // docs/METHOD.md#layers: every convolution but the first.
        let convs: Vec<String> = arch.convs().iter().map(|c| c.name.clone()).collect();
        assert_eq!(convs[0], first, "{name}");
        assert_eq!(arch.default_mixture_layers(), convs[1..].to_vec(), "{name}");
    }
    assert_eq!(Dataset::ImageNet.input_shape(), [3, 224, 224]);
    assert_eq!(Dataset::Cifar10.config(), ArchConfig::default());
}

#[test]
fn torchvision_names_and_geometry() {
    let r50 = default_arch("resnet50");
    let conv = |name: &str| {
        r50.convs()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    };
    // Bottleneck v1.5: the stride sits on the 3x3 conv; the projection is
    // registered after the block's convs.
    assert_eq!(conv("layer2.0.conv1").stride, 1);
    assert_eq!(conv("layer2.0.conv2").stride, 2);
    assert_eq!(
        conv("layer1.0.downsample.0").weight_shape(),
        [256, 64, 1, 1]
    );
    let names: Vec<String> = r50.convs().iter().map(|c| c.name.clone()).collect();
    let pos = |n: &str| names.iter().position(|c| c == n).unwrap();
    assert!(pos("layer1.0.conv3") < pos("layer1.0.downsample.0"));
    assert!(pos("layer1.0.downsample.0") < pos("layer1.1.conv1"));

    let mnv2 = default_arch("mobilenet_v2");
    let dw = mnv2
        .convs()
        .into_iter()
        .find(|c| c.name == "features.2.conv.1.0")
        .unwrap();
    assert!(dw.is_depthwise());
    assert_eq!(
        (dw.groups, dw.stride, dw.weight_shape()),
        (96, 2, [96, 1, 3, 3])
    );
}

#[test]
fn mnasnet_geometry_is_torchvisions() {
    let mnas = default_arch("mnasnet1_0");
    let conv = |name: &str| {
        mnas.convs()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    };
    // The stem's depthwise-separable conv: 3x3, stride 1, 32 groups.
    let dw = conv("layers.3");
    assert!(dw.is_depthwise());
    assert_eq!(
        (dw.stride, dw.padding, dw.weight_shape()),
        (1, 1, [32, 1, 3, 3])
    );
    // 5x5 depthwise with padding 2; the stride sits on each stack's first
    // repeat only.
    let dw = conv("layers.9.0.layers.3");
    assert_eq!(
        (dw.stride, dw.padding, dw.weight_shape()),
        (2, 2, [72, 1, 5, 5])
    );
    assert_eq!(conv("layers.9.1.layers.3").stride, 1);
    assert_eq!(conv("layers.12.3.layers.3").weight_shape(), [1152, 1, 5, 5]);
    assert_eq!(conv("layers.14").weight_shape(), [1280, 320, 1, 1]);
    // Residuals exactly where torchvision's `apply_residual` holds.
    let blocks: Vec<(String, bool)> = mnas
        .layers
        .iter()
        .filter_map(|l| match l {
            Layer::Block(b) => Some((b.name.clone(), b.shortcut.is_some())),
            _ => None,
        })
        .collect();
    assert_eq!(blocks.len(), 16);
    for (name, residual) in &blocks {
        let first = name.ends_with(".0");
        // layers.11 (80 -> 96, stride 1) changes channels in its first
        // repeat, so no stack's first block adds its input.
        assert_eq!(*residual, !first, "{name}");
    }
    // ReLU, not MobileNetV2's ReLU6 (the parity fixture's activations stay
    // below 6, so only this tells them apart): the stem's two, two per
    // block and the head's.
    let acts: Vec<Activation> = mnas
        .walk()
        .into_iter()
        .filter_map(|l| match l {
            Layer::Act(a) => Some(*a),
            _ => None,
        })
        .collect();
    assert_eq!(acts.len(), 2 + 2 * 16 + 1);
    assert!(acts.iter().all(|&a| a == Activation::Relu), "{acts:?}");
    assert!((mnas.batch_norm_momentum - 3e-4).abs() < 1e-12);
    assert_eq!(default_arch("mobilenet_v2").batch_norm_momentum, 0.1);
}

#[test]
fn errors() {
    let err = architecture("resnet99", &ArchConfig::default()).unwrap_err();
    assert!(matches!(err, ArchError::UnknownModel { .. }));
    assert_eq!(
        err.to_string(),
        "unknown model `resnet99`; known models: resnet20, resnet32, resnet56, vggsmall, resnet18, resnet50, mobilenet_v2, mnasnet1_0"
    );
    let err = dgms_arch::resnet_cifar::resnet_cifar(21, &ArchConfig::default()).unwrap_err();
    assert!(
        err.to_string().starts_with("model `resnet21`: depth 21"),
        "{err}"
    );
    let err = dgms_arch::resnet_imagenet::resnet(20, &ArchConfig::default()).unwrap_err();
    assert!(
        err.to_string().starts_with("model `resnet20`: depth 20"),
        "{err}"
    );
    let zero = ArchConfig {
        num_classes: 0,
        ..ArchConfig::default()
    };
    let err = architecture("resnet32", &zero).unwrap_err().to_string();
    assert_eq!(
        err,
        "model `resnet32`: num_classes = 0, expected at least 1"
    );
    let small = ArchConfig {
        image_size: 4,
        ..ArchConfig::default()
    };
    let err = architecture("vggsmall", &small).unwrap_err();
    assert_eq!(err.layer(), Some("features.18"));
    assert_eq!(
        err.to_string(),
        "model `vggsmall`: image_size 4: layer `features.18`: cannot max-pool a 1x1 map"
    );
}
