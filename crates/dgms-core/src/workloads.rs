//! Synthetic layers of real model shapes, for benchmarks and examples:
//! Kaiming-normal weights (std = sqrt(2 / fan_in)), seeded.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Every convolution of torchvision's ResNet-18 (name, OIHW shape), the
/// first conv and the 1x1 downsample convs included.
pub const RESNET18_CONVS: [(&str, [usize; 4]); 20] = [
    ("conv1", [64, 3, 7, 7]),
    ("layer1.0.conv1", [64, 64, 3, 3]),
    ("layer1.0.conv2", [64, 64, 3, 3]),
    ("layer1.1.conv1", [64, 64, 3, 3]),
    ("layer1.1.conv2", [64, 64, 3, 3]),
    ("layer2.0.conv1", [128, 64, 3, 3]),
    ("layer2.0.conv2", [128, 128, 3, 3]),
    ("layer2.0.downsample.0", [128, 64, 1, 1]),
    ("layer2.1.conv1", [128, 128, 3, 3]),
    ("layer2.1.conv2", [128, 128, 3, 3]),
    ("layer3.0.conv1", [256, 128, 3, 3]),
    ("layer3.0.conv2", [256, 256, 3, 3]),
    ("layer3.0.downsample.0", [256, 128, 1, 1]),
    ("layer3.1.conv1", [256, 256, 3, 3]),
    ("layer3.1.conv2", [256, 256, 3, 3]),
    ("layer4.0.conv1", [512, 256, 3, 3]),
    ("layer4.0.conv2", [512, 512, 3, 3]),
    ("layer4.0.downsample.0", [512, 256, 1, 1]),
    ("layer4.1.conv1", [512, 512, 3, 3]),
    ("layer4.1.conv2", [512, 512, 3, 3]),
];

/// The largest ResNet-18 conv (layer4, 512x512x3x3 = 2,359,296 weights).
pub const RESNET18_LAYER4_CONV: [usize; 4] = [512, 512, 3, 3];

/// Kaiming-normal weights of an OIHW `shape`, from `seed`.
pub fn kaiming_weights(shape: &[usize], seed: u64) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
    normal_weights(n, (2.0 / fan_in as f64).sqrt(), seed)
}

/// Every conv of [`RESNET18_CONVS`] with its Kaiming-normal weights (layer
/// `i` seeded with `i`): the initialisation workload of the benches.
pub fn resnet18_conv_weights() -> Vec<(String, Vec<f32>)> {
    RESNET18_CONVS
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| (name.to_string(), kaiming_weights(shape, i as u64)))
        .collect()
}

/// `n` normal weights with mean 0 and standard deviation `std`, from `seed`.
pub fn normal_weights(n: usize, std: f64, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            (z * std) as f32
        })
        .collect()
}
