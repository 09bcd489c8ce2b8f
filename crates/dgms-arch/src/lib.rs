//! # dgms-arch
//!
//! One declarative description per network, with no dependencies: the
//! layers in order ([`Layer`]: convolutions with their parameter names,
//! shapes, strides, padding and groups; batch norms; ReLU and ReLU6;
//! max-pools; [`Block`]s with their residual joins; global pooling,
//! flatten, dropout and the classifier). Both readers build from it:
//! `dgms-models` interprets it into a trainable candle network and
//! `dgms-qsimd` translates it into its inference engine's op graph. It also
//! answers what the CLI asks: the default input and classes
//! ([`Architecture::dataset`]), the classifier's name, which layers get a
//! mixture by default, and the batch-norm eps.
//!
//! The networks: the CIFAR ResNet-20/32/56 and VGG-Small with the DGMS
//! authors' parameter names, and torchvision's ResNet-18/50, MobileNetV2 and
//! MNASNet 1.0 with torchvision's ([`MODEL_NAMES`]). Every description is checked when
//! made: the shapes chain from the input to the logits.
//!
//! Adding a network means writing one function returning its
//! [`Architecture`] (a new file beside `resnet_cifar.rs`), listing its name
//! in [`MODEL_NAMES`] and [`architecture()`], and adding its parity fixture.
//!
//! ```
//! use dgms_arch::{architecture, ArchConfig, Dataset};
//!
//! let arch = architecture("resnet18", &Dataset::ImageNet.config())?;
//! assert_eq!(arch.parameter_count(), 11_689_512);
//! assert_eq!(arch.classifier_weight(), "fc.weight");
//! assert_eq!(arch.dataset.input_shape(), [3, 224, 224]);
//! assert_eq!(arch.default_mixture_layers().len(), 19);
//! assert!(architecture("resnet99", &ArchConfig::default()).is_err());
//! # Ok::<(), dgms_arch::ArchError>(())
//! ```

pub mod architecture;
pub mod error;
pub mod layer;
pub mod mnasnet;
pub mod mobilenet_v2;
pub mod resnet_cifar;
pub mod resnet_imagenet;
pub mod shape;
pub mod vgg_small;

pub use architecture::{
    ArchConfig, Architecture, Dataset, Parameter, BATCH_NORM_EPS, BATCH_NORM_MOMENTUM,
};
pub use error::ArchError;
pub use layer::{Activation, BatchNorm, Block, Conv, Layer, Linear, MaxPool, Shortcut};
pub use shape::Shape;

/// The networks [`architecture()`] describes.
pub const MODEL_NAMES: [&str; 8] = [
    "resnet20",
    "resnet32",
    "resnet56",
    "vggsmall",
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mnasnet1_0",
];

/// The description of the network `name` (one of [`MODEL_NAMES`]) for
/// `cfg`. Errors on an unknown name (listing the known ones), on a zero
/// size, and when the input is too small for the network.
pub fn architecture(name: &str, cfg: &ArchConfig) -> Result<Architecture, ArchError> {
    match name {
        "resnet20" => resnet_cifar::resnet_cifar(20, cfg),
        "resnet32" => resnet_cifar::resnet_cifar(32, cfg),
        "resnet56" => resnet_cifar::resnet_cifar(56, cfg),
        "vggsmall" => vgg_small::vgg_small(cfg),
        "resnet18" => resnet_imagenet::resnet(18, cfg),
        "resnet50" => resnet_imagenet::resnet(50, cfg),
        "mobilenet_v2" => mobilenet_v2::mobilenet_v2(cfg),
        "mnasnet1_0" => mnasnet::mnasnet1_0(cfg),
        _ => Err(ArchError::UnknownModel {
            name: name.to_string(),
            known: MODEL_NAMES.to_vec(),
        }),
    }
}

/// The data set `name` was designed for, which gives its default input
/// shape and classes (ImageNet models default to 3 x 224 x 224 when no data
/// set says otherwise).
pub fn designed_for(name: &str) -> Result<Dataset, ArchError> {
    Ok(architecture(name, &ArchConfig::default())?.dataset)
}
