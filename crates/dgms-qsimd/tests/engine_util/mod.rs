//! Synthetic packed models for the engine tests: every supported
//! architecture with seeded random codebooks, indices, batch norms and
//! full-precision layers, named as `dgms-models` names them.
#![allow(dead_code)]

use std::collections::BTreeMap;

use dgms_qsimd::format::{FpTensor, ModelMeta, PackedLayer, PackedModel};
use dgms_test_support::rng::SplitMix64;

/// Builds a model layer by layer.
pub struct ModelGen {
    rng: SplitMix64,
    layers: Vec<PackedLayer>,
    tensors: BTreeMap<String, FpTensor>,
    /// K of the next quantized layers, cycled (4-bit, 3-bit, 8-bit layouts).
    ks: Vec<usize>,
    next_k: usize,
}

impl ModelGen {
    pub fn new(seed: u64) -> ModelGen {
        ModelGen {
            rng: SplitMix64::new(seed),
            layers: Vec::new(),
            tensors: BTreeMap::new(),
            ks: vec![16, 16, 5, 16, 200, 16, 4],
            next_k: 0,
        }
    }

    fn fp(&mut self, name: String, shape: Vec<usize>, lo: f32, hi: f32) {
        let n = shape.iter().product();
        let data = self.rng.uniform_vec(n, lo, hi);
        self.tensors
            .insert(name, FpTensor::new(shape, data).expect("finite"));
    }

    /// A conv (or linear) weight `name` of `shape`: quantized or f32, with
    /// values of about sqrt(2 / fan_in) (activations stay O(1)).
    pub fn weight(&mut self, name: &str, shape: Vec<usize>, quantized: bool) {
        let fan_in: usize = shape[1..].iter().product();
        let std = (6.0 / fan_in as f32).sqrt();
        if quantized {
            let k = self.ks[self.next_k % self.ks.len()];
            self.next_k += 1;
            let mut codebook = self.rng.uniform_vec(k, -std, std);
            codebook[0] = 0.0;
            // Zero-mean weights (indices are uniform): a nonzero mean times
            // the all-positive inputs after a ReLU would swamp the signal,
            // and deep random models would give every image the same logits.
            let mean = codebook.iter().sum::<f32>() / (k - 1) as f32;
            codebook[1..].iter_mut().for_each(|c| *c -= mean);
            let n: usize = shape.iter().product();
            let idx: Vec<u8> = (0..n).map(|_| self.rng.below(k) as u8).collect();
            let layer =
                PackedLayer::from_indices(name, shape, &idx, codebook).expect("valid layer");
            self.layers.push(layer);
        } else {
            self.fp(format!("{name}.weight"), shape, -std, std);
        }
    }

    pub fn bias(&mut self, name: &str, c: usize) {
        self.fp(format!("{name}.bias"), vec![c], -0.1, 0.1);
    }

    pub fn bn(&mut self, name: &str, c: usize) {
        self.fp(format!("{name}.scale"), vec![c], 0.5, 1.2);
        self.fp(format!("{name}.shift"), vec![c], -0.2, 0.2);
    }

    pub fn finish(self, arch: &str, input: [usize; 3], classes: usize) -> PackedModel {
        PackedModel::new(
            ModelMeta::new(arch, input.to_vec(), classes),
            self.layers,
            self.tensors,
        )
        .expect("valid model")
    }
}

/// CIFAR ResNet-(6n+2) with `c` input channels.
pub fn resnet_cifar(n: usize, input: [usize; 3], classes: usize, seed: u64) -> PackedModel {
    let mut g = ModelGen::new(seed);
    g.weight("conv1", vec![16, input[0], 3, 3], false);
    g.bn("bn1", 16);
    let mut in_planes = 16;
    for (s, planes) in [16, 32, 64].into_iter().enumerate() {
        for i in 0..n {
            let p = format!("layer{}.{i}", s + 1);
            g.weight(&format!("{p}.conv1"), vec![planes, in_planes, 3, 3], true);
            g.bn(&format!("{p}.bn1"), planes);
            g.weight(&format!("{p}.conv2"), vec![planes, planes, 3, 3], true);
            g.bn(&format!("{p}.bn2"), planes);
            in_planes = planes;
        }
    }
    g.weight("linear", vec![classes, 64], false);
    g.bias("linear", classes);
    g.finish(&format!("resnet{}", 6 * n + 2), input, classes)
}

/// VGG-Small on `size` x `size` inputs.
pub fn vgg_small(size: usize, classes: usize, seed: u64) -> PackedModel {
    let mut g = ModelGen::new(seed);
    let mut index = 0;
    let mut in_c = 3;
    for (i, (c, pool)) in [
        (128, false),
        (128, true),
        (256, false),
        (256, true),
        (512, false),
        (512, true),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("features.{index}");
        g.weight(&name, vec![c, in_c, 3, 3], i > 0);
        g.bias(&name, c);
        let bn = index + if pool { 2 } else { 1 };
        g.bn(&format!("features.{bn}"), c);
        index = bn + 2;
        in_c = c;
    }
    let f = size / 8;
    g.weight("classifier", vec![classes, 512 * f * f], false);
    g.bias("classifier", classes);
    g.finish("vggsmall", [3, size, size], classes)
}

/// torchvision ResNet-18 on `size` x `size` inputs.
pub fn resnet18(size: usize, classes: usize, seed: u64) -> PackedModel {
    resnet_imagenet("resnet18", false, [2, 2, 2, 2], size, classes, seed)
}

/// torchvision ResNet-50 (bottlenecks, stride on the 3x3) on `size` x
/// `size` inputs.
pub fn resnet50(size: usize, classes: usize, seed: u64) -> PackedModel {
    resnet_imagenet("resnet50", true, [3, 4, 6, 3], size, classes, seed)
}

fn resnet_imagenet(
    arch: &str,
    bottlenecks: bool,
    blocks: [usize; 4],
    size: usize,
    classes: usize,
    seed: u64,
) -> PackedModel {
    let mut g = ModelGen::new(seed);
    g.weight("conv1", vec![64, 3, 7, 7], false);
    g.bn("bn1", 64);
    let mut in_planes = 64;
    for (s, (planes, n)) in [64, 128, 256, 512].into_iter().zip(blocks).enumerate() {
        let out = if bottlenecks { 4 * planes } else { planes };
        for i in 0..n {
            let p = format!("layer{}.{i}", s + 1);
            let stride = if s > 0 && i == 0 { 2 } else { 1 };
            let convs: Vec<(usize, usize, usize)> = if bottlenecks {
                vec![
                    (planes, in_planes, 1),
                    (planes, planes, 3),
                    (out, planes, 1),
                ]
            } else {
                vec![(planes, in_planes, 3), (planes, planes, 3)]
            };
            for (j, (o, c, k)) in convs.into_iter().enumerate() {
                g.weight(&format!("{p}.conv{}", j + 1), vec![o, c, k, k], true);
                g.bn(&format!("{p}.bn{}", j + 1), o);
            }
            if stride != 1 || in_planes != out {
                g.weight(
                    &format!("{p}.downsample.0"),
                    vec![out, in_planes, 1, 1],
                    true,
                );
                g.bn(&format!("{p}.downsample.1"), out);
            }
            in_planes = out;
        }
    }
    g.weight("fc", vec![classes, in_planes], false);
    g.bias("fc", classes);
    g.finish(arch, [3, size, size], classes)
}

/// torchvision MobileNetV2 on `size` x `size` inputs (depthwise weights
/// quantized, as the default layer selection does, `docs/METHOD.md#layers`).
pub fn mobilenet_v2(size: usize, classes: usize, seed: u64) -> PackedModel {
    const SETTINGS: [(usize, usize, usize, usize); 7] = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    let mut g = ModelGen::new(seed);
    g.weight("features.0.0", vec![32, 3, 3, 3], false);
    g.bn("features.0.1", 32);
    let (mut inp, mut index) = (32, 1);
    for (t, c, n, _) in SETTINGS {
        for _ in 0..n {
            let p = format!("features.{index}.conv");
            let hidden = inp * t;
            let mut j = 0;
            if t != 1 {
                g.weight(&format!("{p}.0.0"), vec![hidden, inp, 1, 1], true);
                g.bn(&format!("{p}.0.1"), hidden);
                j = 1;
            }
            g.weight(&format!("{p}.{j}.0"), vec![hidden, 1, 3, 3], true);
            g.bn(&format!("{p}.{j}.1"), hidden);
            g.weight(&format!("{p}.{}", j + 1), vec![c, hidden, 1, 1], true);
            g.bn(&format!("{p}.{}", j + 2), c);
            inp = c;
            index += 1;
        }
    }
    g.weight(&format!("features.{index}.0"), vec![1280, inp, 1, 1], true);
    g.bn(&format!("features.{index}.1"), 1280);
    g.weight("classifier.1", vec![classes, 1280], false);
    g.bias("classifier.1", classes);
    g.finish("mobilenet_v2", [3, size, size], classes)
}

/// torchvision MNASNet 1.0 on `size` x `size` inputs (depthwise 3x3 and
/// 5x5 weights quantized, as the default layer selection does).
pub fn mnasnet1_0(size: usize, classes: usize, seed: u64) -> PackedModel {
    // (out, kernel, expansion, repeats) of layers.8 to layers.13.
    const STACKS: [(usize, usize, usize, usize); 6] = [
        (24, 3, 3, 3),
        (40, 5, 3, 3),
        (80, 5, 6, 3),
        (96, 3, 6, 2),
        (192, 5, 6, 4),
        (320, 3, 6, 1),
    ];
    let mut g = ModelGen::new(seed);
    g.weight("layers.0", vec![32, 3, 3, 3], false);
    g.bn("layers.1", 32);
    g.weight("layers.3", vec![32, 1, 3, 3], true);
    g.bn("layers.4", 32);
    g.weight("layers.6", vec![16, 32, 1, 1], true);
    g.bn("layers.7", 16);
    let mut inp = 16;
    for (s, (out, k, t, n)) in STACKS.into_iter().enumerate() {
        for r in 0..n {
            let p = format!("layers.{}.{r}.layers", 8 + s);
            let mid = inp * t;
            g.weight(&format!("{p}.0"), vec![mid, inp, 1, 1], true);
            g.bn(&format!("{p}.1"), mid);
            g.weight(&format!("{p}.3"), vec![mid, 1, k, k], true);
            g.bn(&format!("{p}.4"), mid);
            g.weight(&format!("{p}.6"), vec![out, mid, 1, 1], true);
            g.bn(&format!("{p}.7"), out);
            inp = out;
        }
    }
    g.weight("layers.14", vec![1280, inp, 1, 1], true);
    g.bn("layers.15", 1280);
    g.weight("classifier.1", vec![classes, 1280], false);
    g.bias("classifier.1", classes);
    g.finish("mnasnet1_0", [3, size, size], classes)
}

/// `n` random images of `shape`.
pub fn images(n: usize, shape: [usize; 3], seed: u64) -> Vec<f32> {
    SplitMix64::new(seed).uniform_vec(n * shape.iter().product::<usize>(), -1.0, 1.0)
}
