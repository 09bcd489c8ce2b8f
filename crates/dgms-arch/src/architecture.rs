//! [`Architecture`]: a network's description with the facts every reader
//! asks for (parameters, convolutions, classifier, default mixture layers),
//! and the settings ([`ArchConfig`]) it is made for.

use crate::error::ArchError;
use crate::layer::{Conv, Layer, Shortcut};
use crate::shape::{self, Shape};

/// PyTorch's batch-norm eps, which every network here uses.
pub const BATCH_NORM_EPS: f64 = 1e-5;

/// PyTorch's default batch-norm momentum (the weight of a batch's
/// statistics in training's running averages).
pub const BATCH_NORM_MOMENTUM: f64 = 0.1;

/// What a network is made for: input channels, classes, image size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchConfig {
    /// Channels of the input images (3 for CIFAR, 1 for Fashion-MNIST).
    pub in_channels: usize,
    /// Number of classes (outputs of the classifier).
    pub num_classes: usize,
    /// Height = width of the input images. ResNets and MobileNetV2 pool
    /// globally and accept any size; VGG-Small's classifier input depends
    /// on it.
    pub image_size: usize,
}

impl Default for ArchConfig {
    /// CIFAR-10: 3 channels, 10 classes, 32x32 (for the ImageNet models use
    /// 1000 classes, 224x224: [`Dataset::ImageNet`]'s config).
    fn default() -> Self {
        Dataset::Cifar10.config()
    }
}

impl ArchConfig {
    /// Checks that no size is zero (`model` names the model in the error).
    pub fn validate(&self, model: &str) -> Result<(), ArchError> {
        for (what, v) in [
            ("in_channels", self.in_channels),
            ("num_classes", self.num_classes),
            ("image_size", self.image_size),
        ] {
            if v == 0 {
                return Err(ArchError::Config {
                    model: model.to_string(),
                    what: format!("{what} = 0, expected at least 1"),
                });
            }
        }
        Ok(())
    }
}

/// The data set a network was designed for, which gives its default input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataset {
    /// 3 x 32 x 32, 10 classes (the CIFAR ResNets, VGG-Small).
    Cifar10,
    /// 3 x 224 x 224, 1000 classes (torchvision's models).
    ImageNet,
}

impl Dataset {
    /// The input shape [C, H, W].
    pub fn input_shape(self) -> [usize; 3] {
        match self {
            Dataset::Cifar10 => [3, 32, 32],
            Dataset::ImageNet => [3, 224, 224],
        }
    }

    /// The settings of a network for this data set.
    pub fn config(self) -> ArchConfig {
        let [c, h, _] = self.input_shape();
        ArchConfig {
            in_channels: c,
            num_classes: match self {
                Dataset::Cifar10 => 10,
                Dataset::ImageNet => 1000,
            },
            image_size: h,
        }
    }
}

/// A parameter (or batch-norm buffer) of a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parameter {
    /// Full name, e.g. `layer1.0.conv1.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    /// False for batch-norm running statistics.
    pub trainable: bool,
}

/// One network, described layer by layer for one [`ArchConfig`].
#[derive(Clone, Debug, PartialEq)]
pub struct Architecture {
    /// The model name, e.g. `resnet20`.
    pub name: String,
    /// The settings it was made for.
    pub config: ArchConfig,
    /// The data set it was designed for.
    pub dataset: Dataset,
    /// The layers, run in order.
    pub layers: Vec<Layer>,
    /// Name of the final classifier (a [`Layer::Linear`]; full precision).
    pub classifier: String,
    /// eps of every batch norm.
    pub batch_norm_eps: f64,
    /// Momentum of every batch norm's running averages (training only):
    /// [`BATCH_NORM_MOMENTUM`] except where the original sets another
    /// (MNASNet's `1 - 0.9997`).
    pub batch_norm_momentum: f64,
}

impl Architecture {
    /// A description, checked: the shapes chain from the input to
    /// `num_classes` logits and `classifier` names its last linear layer.
    pub fn new(
        name: impl Into<String>,
        config: &ArchConfig,
        dataset: Dataset,
        classifier: impl Into<String>,
        layers: Vec<Layer>,
    ) -> Result<Self, ArchError> {
        let arch = Self {
            name: name.into(),
            config: config.clone(),
            dataset,
            layers,
            classifier: classifier.into(),
            batch_norm_eps: BATCH_NORM_EPS,
            batch_norm_momentum: BATCH_NORM_MOMENTUM,
        };
        arch.check()?;
        Ok(arch)
    }

    /// Input shape [C, H, W] of one image.
    pub fn input_shape(&self) -> [usize; 3] {
        let c = &self.config;
        [c.in_channels, c.image_size, c.image_size]
    }

    /// The shapes chain and the output is `num_classes` logits from the
    /// classifier.
    fn check(&self) -> Result<(), ArchError> {
        self.config.validate(&self.name)?;
        let [c, h, w] = self.input_shape();
        let out = shape::infer(&self.layers, Shape { c, h, w }).map_err(|(layer, what)| {
            ArchError::Shape {
                model: self.name.clone(),
                image_size: self.config.image_size,
                layer,
                what,
            }
        })?;
        let config_err = |what: String| ArchError::Config {
            model: self.name.clone(),
            what,
        };
        let expected = Shape {
            c: self.config.num_classes,
            h: 1,
            w: 1,
        };
        if out != expected {
            return Err(config_err(format!(
                "the layers end in {}x{}x{}, expected {} logits",
                out.c, out.h, out.w, self.config.num_classes
            )));
        }
        match self.layers.last() {
            Some(Layer::Linear(l)) if l.name == self.classifier => Ok(()),
            _ => Err(config_err(format!(
                "the classifier `{}` is not the last layer",
                self.classifier
            ))),
        }
    }

    /// Every layer, depth first in registration order: a block's body, then
    /// its shortcut's layers (as torchvision registers `downsample` last).
    pub fn walk(&self) -> Vec<&Layer> {
        fn visit<'a>(layers: &'a [Layer], out: &mut Vec<&'a Layer>) {
            for layer in layers {
                out.push(layer);
                if let Layer::Block(b) = layer {
                    visit(&b.body, out);
                    if let Some(Shortcut::Projection(p)) = &b.shortcut {
                        visit(p, out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        visit(&self.layers, &mut out);
        out
    }

    /// Every convolution, in registration order (the first is the stem).
    pub fn convs(&self) -> Vec<&Conv> {
        self.walk()
            .into_iter()
            .filter_map(|l| match l {
                Layer::Conv(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    /// The convolutions that get a mixture by default: every one but the
    /// first (docs/METHOD.md#layers; the classifier is not a convolution and stays
    /// full precision).
    pub fn default_mixture_layers(&self) -> Vec<String> {
        self.convs()
            .iter()
            .skip(1)
            .map(|c| c.name.clone())
            .collect()
    }

    /// The classifier's weight name (its rows are the classes).
    pub fn classifier_weight(&self) -> String {
        format!("{}.weight", self.classifier)
    }

    /// Every parameter and batch-norm buffer with its shape, in
    /// registration order, named as PyTorch's state dict names them
    /// (without `num_batches_tracked`).
    pub fn parameters(&self) -> Vec<Parameter> {
        let p = |name: &str, suffix: &str, shape: Vec<usize>, trainable: bool| Parameter {
            name: format!("{name}.{suffix}"),
            shape,
            trainable,
        };
        let mut out = Vec::new();
        for layer in self.walk() {
            match layer {
                Layer::Conv(c) => {
                    out.push(p(&c.name, "weight", c.weight_shape().to_vec(), true));
                    if c.bias {
                        out.push(p(&c.name, "bias", vec![c.out_channels], true));
                    }
                }
                Layer::BatchNorm(bn) => {
                    for (suffix, trainable) in [
                        ("weight", true),
                        ("bias", true),
                        ("running_mean", false),
                        ("running_var", false),
                    ] {
                        out.push(p(&bn.name, suffix, vec![bn.channels], trainable));
                    }
                }
                Layer::Linear(l) => {
                    out.push(p(
                        &l.name,
                        "weight",
                        vec![l.out_features, l.in_features],
                        true,
                    ));
                    out.push(p(&l.name, "bias", vec![l.out_features], true));
                }
                _ => {}
            }
        }
        out
    }

    /// Trainable parameters, as PyTorch's `sum(p.numel() for p in
    /// model.parameters())` counts them.
    pub fn parameter_count(&self) -> usize {
        self.parameters()
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }
}
