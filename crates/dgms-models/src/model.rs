//! The [`DgmsModel`] trait shared by every model, its configuration, and the
//! [`build_model`] factory.

use candle_core::Var;
use candle_nn::{ModuleT, VarBuilder};
use dgms_core::{GaussianMixture, InitConfig, InitOutcome, MixtureOptions};

use crate::error::{ModelError, Result};
use crate::mobilenet_v2::MobileNetV2;
use crate::qconv::QConv2d;
use crate::resnet_cifar::ResNetCifar;
use crate::resnet_imagenet::ResNet;
use crate::selection::{self, LayerSelection};
use crate::vgg_small::VggSmall;

/// Names accepted by [`build_model`].
pub const MODEL_NAMES: [&str; 7] = [
    "resnet20",
    "resnet32",
    "resnet56",
    "vggsmall",
    "resnet18",
    "resnet50",
    "mobilenet_v2",
];

/// Settings shared by the models.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// Channels of the input images (3 for CIFAR, 1 for Fashion-MNIST).
    pub in_channels: usize,
    /// Number of classes (outputs of the classifier).
    pub num_classes: usize,
    /// Height = width of the input images. ResNets and MobileNetV2 pool
    /// globally and accept any size; VGG-Small's classifier input depends
    /// on it.
    pub image_size: usize,
}

impl Default for ModelConfig {
    /// CIFAR-10: 3 channels, 10 classes, 32x32 (for the ImageNet models use
    /// 1000 classes, 224x224).
    fn default() -> Self {
        Self {
            in_channels: 3,
            num_classes: 10,
            image_size: 32,
        }
    }
}

impl ModelConfig {
    /// Checks that no size is zero (`model` names the model in the error).
    pub(crate) fn validate(&self, model: &str) -> Result<()> {
        for (what, v) in [
            ("in_channels", self.in_channels),
            ("num_classes", self.num_classes),
            ("image_size", self.image_size),
        ] {
            if v == 0 {
                return Err(ModelError::Config {
                    model: model.to_string(),
                    what: format!("{what} = 0, expected at least 1"),
                });
            }
        }
        Ok(())
    }
}

/// A classification model whose convolutions can carry DGMS mixtures.
///
/// `forward_t(x, train)` maps images (N, C, H, W) to logits (N, classes);
/// `train` selects batch statistics and soft weights (true) or running
/// statistics and hard weights (false).
pub trait DgmsModel: ModuleT + Send + Sync + std::fmt::Debug {
    /// The model's name, e.g. `resnet20`.
    fn model_name(&self) -> &str;

    /// Every convolution, in forward order (the first is the stem).
    fn convs(&self) -> Vec<&QConv2d>;

    /// Parameter-name prefix of the final classifier (full precision).
    fn classifier_name(&self) -> &str;

    /// The convolution with parameter-name prefix `name`.
    fn conv(&self, name: &str) -> Option<&QConv2d> {
        self.convs().into_iter().find(|c| c.name() == name)
    }

    /// Names of the convolutions selected by [`LayerSelection::default`]:
    /// all but the first (SPEC section 3).
    fn default_mixture_layers(&self) -> Vec<String> {
        self.convs()
            .iter()
            .skip(1)
            .map(|c| c.name().to_string())
            .collect()
    }

    /// Initialises a mixture for every selected convolution from its current
    /// weights (k-means, in parallel) and sets it, replacing any previous one.
    /// Nothing is changed if any layer fails. Returns the initialisation of
    /// each selected layer, in forward order (the order of [`Self::mixtures`]
    /// when no other layer has one).
    fn enable_mixtures(
        &self,
        init: &InitConfig,
        opts: &MixtureOptions,
        selection: &LayerSelection,
    ) -> Result<Vec<InitOutcome>> {
        selection::enable(self.model_name(), &self.convs(), init, opts, selection)
    }

    /// Removes every mixture (plain weights again).
    fn disable_mixtures(&self) {
        for c in self.convs() {
            c.set_mixture(None);
        }
    }

    /// The mixtures set, with their layer names, in forward order.
    fn mixtures(&self) -> Vec<(String, GaussianMixture)> {
        self.convs()
            .iter()
            .filter_map(|c| c.mixture().map(|m| (c.name().to_string(), m)))
            .collect()
    }

    /// Every mixture tensor named `<layer>.<param>` (e.g.
    /// `layer1.0.conv1.mu`), for checkpoints.
    fn mixture_vars(&self) -> Vec<(String, Var)> {
        self.mixtures()
            .iter()
            .flat_map(|(layer, m)| {
                m.named_vars()
                    .into_iter()
                    .map(move |(p, v)| (format!("{layer}.{p}"), v))
            })
            .collect()
    }

    /// The mixture parameters that receive gradients, for the optimizer.
    fn mixture_trainable_vars(&self) -> Vec<Var> {
        self.mixtures()
            .iter()
            .flat_map(|(_, m)| m.trainable_vars())
            .collect()
    }
}

/// Builds the model `name` (one of [`MODEL_NAMES`]) from `vb`, which holds
/// (or, with a `VarMap`, creates) its parameters under the original names.
pub fn build_model(name: &str, cfg: &ModelConfig, vb: VarBuilder) -> Result<Box<dyn DgmsModel>> {
    let model: Box<dyn DgmsModel> = match name {
        "resnet20" => Box::new(ResNetCifar::new(20, cfg, vb)?),
        "resnet32" => Box::new(ResNetCifar::new(32, cfg, vb)?),
        "resnet56" => Box::new(ResNetCifar::new(56, cfg, vb)?),
        "vggsmall" => Box::new(VggSmall::new(cfg, vb)?),
        "resnet18" => Box::new(ResNet::new(18, cfg, vb)?),
        "resnet50" => Box::new(ResNet::new(50, cfg, vb)?),
        "mobilenet_v2" => Box::new(MobileNetV2::new(cfg, vb)?),
        _ => {
            return Err(ModelError::UnknownModel {
                name: name.to_string(),
                known: MODEL_NAMES.to_vec(),
            })
        }
    };
    Ok(model)
}
