//! The [`DgmsModel`] trait shared by every model, its configuration, and the
//! [`build_model`] factory.

use candle_core::Var;
use candle_nn::{ModuleT, VarBuilder};
use dgms_core::{GaussianMixture, InitConfig, InitOutcome, MixtureOptions, UniformQuantizer};

use crate::conv::ConvBackend;
use crate::error::Result;
use crate::network::Network;
use crate::qconv::QConv2d;
use crate::selection::{self, LayerSelection};

/// Names accepted by [`build_model`]: the networks `dgms-arch` describes.
pub use dgms_arch::MODEL_NAMES;

/// Settings shared by the models: input channels, classes, image size
/// (`dgms-arch`'s [`dgms_arch::ArchConfig`]; the default is CIFAR-10).
pub use dgms_arch::ArchConfig as ModelConfig;

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

    /// Seeds the dropout masks of the next training passes (the trainer
    /// calls it before every step with a seed derived from the run's seed
    /// and the step, so that a resumed run draws the same masks). Models
    /// without dropout ignore it.
    fn set_dropout_seed(&self, _seed: u64) {}

    /// The convolution with parameter-name prefix `name`.
    fn conv(&self, name: &str) -> Option<&QConv2d> {
        self.convs().into_iter().find(|c| c.name() == name)
    }

    /// Names of the convolutions selected by [`LayerSelection::default`]:
    /// all but the first (docs/METHOD.md#layers).
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

    /// The uniform grids set (the LSQ baseline), with their layer names, in
    /// forward order.
    fn uniform_quantizers(&self) -> Vec<(String, UniformQuantizer)> {
        self.convs()
            .iter()
            .filter_map(|c| c.uniform().map(|u| (c.name().to_string(), u)))
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
/// Its convolutions and batch norms run on the default [`ConvBackend`] on
/// the CPU, on candle's ops elsewhere ([`ConvBackend::for_device`]).
pub fn build_model(name: &str, cfg: &ModelConfig, vb: VarBuilder) -> Result<Box<dyn DgmsModel>> {
    build_model_with_backend(name, cfg, ConvBackend::default(), vb)
}

/// [`build_model`] with the model's convolutions and batch norms on
/// `backend`; models with different backends can live side by side. A
/// model whose `vb` is on another device than the CPU runs on
/// [`ConvBackend::Candle`] whatever `backend` says
/// ([`ConvBackend::for_device`]).
pub fn build_model_with_backend(
    name: &str,
    cfg: &ModelConfig,
    backend: ConvBackend,
    vb: VarBuilder,
) -> Result<Box<dyn DgmsModel>> {
    let arch = dgms_arch::architecture(name, cfg)?;
    let backend = backend.for_device(vb.device());
    Ok(Box::new(Network::new(arch, backend, vb)?))
}
