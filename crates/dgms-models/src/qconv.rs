//! [`QConv2d`]: a convolution whose weights can be replaced by the soft
//! (training) or hard (evaluation) weights of a Gaussian mixture, or by
//! those of a uniform grid with a learned step (the LSQ baseline).

use std::sync::{RwLock, RwLockReadGuard};

use candle_core::{Tensor, Var};
use candle_nn::{Init, VarBuilder};
use dgms_core::{GaussianMixture, UniformQuantizer};

use crate::conv::ConvBackend;
use crate::error::{ModelError, Result};

/// Geometry of a [`QConv2d`]: square kernel, stride and zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size (square).
    pub kernel: usize,
    /// Stride (both directions).
    pub stride: usize,
    /// Zero padding (both directions).
    pub padding: usize,
    /// Channel groups (1 for a dense convolution).
    pub groups: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
}

impl From<&dgms_arch::Conv> for ConvSpec {
    /// The geometry of a described convolution (its name is the module's
    /// path, given by the caller's `VarBuilder`).
    fn from(c: &dgms_arch::Conv) -> Self {
        Self {
            in_channels: c.in_channels,
            out_channels: c.out_channels,
            kernel: c.kernel,
            stride: c.stride,
            padding: c.padding,
            groups: c.groups,
            bias: c.bias,
        }
    }
}

/// A 2-D convolution with an optional Gaussian mixture over its weights.
///
/// - no mixture: the plain weight;
/// - mixture, `train == true`: the soft weights `mixture.soft_weights(w)`
///   (gradients reach `w` and every trainable mixture `Var`);
/// - mixture, `train == false`: the hard weights (each weight replaced by its
///   most likely component's mean, 0 for the zero component);
/// - uniform grid (the baseline, [`UniformQuantizer`]): its straight-through
///   training forward, or its hard weights; a mixture, when both are set,
///   takes precedence (setting one through the model's helpers clears the
///   other).
///
/// The hard weights are recomputed on every evaluation forward pass: the
/// optimizer updates the weight and mixture `Var`s in place, so there is no
/// cheap way to tell whether a cached copy is stale. This costs one pass over
/// the layer's weights per call, small against the convolution for the
/// batch sizes used in evaluation.
///
/// The mixture sits behind a lock because models are built (and their
/// weights loaded) before the mixtures can be initialised from those weights.
#[derive(Debug)]
pub struct QConv2d {
    name: String,
    spec: ConvSpec,
    weight: Tensor,
    bias: Option<Tensor>,
    backend: ConvBackend,
    mixture: RwLock<Option<GaussianMixture>>,
    uniform: RwLock<Option<UniformQuantizer>>,
}

impl QConv2d {
    /// Creates or loads `weight` (and `bias`) under the builder's prefix,
    /// which becomes the layer's name. With a `VarMap` backend the weight is
    /// a `Var` (Kaiming-normal init if new), so training updates it in place.
    /// Runs on the default [`ConvBackend`].
    pub fn new(spec: ConvSpec, vb: VarBuilder) -> Result<Self> {
        Self::with_backend(spec, ConvBackend::default(), vb)
    }

    /// [`Self::new`] running its convolution on `backend`.
    pub fn with_backend(spec: ConvSpec, backend: ConvBackend, vb: VarBuilder) -> Result<Self> {
        let name = vb.prefix();
        if spec.groups == 0
            || spec.stride == 0
            || spec.kernel == 0
            || !spec.in_channels.is_multiple_of(spec.groups)
            || !spec.out_channels.is_multiple_of(spec.groups)
        {
            return Err(ModelError::load(
                name,
                candle_core::Error::Msg(format!("invalid convolution {spec:?}")),
            ));
        }
        let shape = (
            spec.out_channels,
            spec.in_channels / spec.groups,
            spec.kernel,
            spec.kernel,
        );
        let weight = vb
            .get_with_hints(shape, "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)
            .map_err(|e| ModelError::load(&name, e))?;
        let bias = if spec.bias {
            // PyTorch's default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            let fan_in = (spec.in_channels / spec.groups) * spec.kernel * spec.kernel;
            let bound = 1.0 / (fan_in as f64).sqrt();
            let init = Init::Uniform {
                lo: -bound,
                up: bound,
            };
            let b = vb
                .get_with_hints(spec.out_channels, "bias", init)
                .map_err(|e| ModelError::load(&name, e))?;
            Some(b)
        } else {
            None
        };
        Ok(Self {
            name,
            spec,
            weight,
            bias,
            backend,
            mixture: RwLock::new(None),
            uniform: RwLock::new(None),
        })
    }

    /// The parameter-name prefix, e.g. `layer1.0.conv1` (the weight is
    /// `<name>.weight`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layer's geometry.
    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// The convolution implementation this layer runs on.
    pub fn backend(&self) -> ConvBackend {
        self.backend
    }

    /// The latent (full-precision) weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The weight as a `Var` when it is one (built from a `VarMap`).
    pub fn weight_var(&self) -> Option<Var> {
        if self.weight.is_variable() {
            Var::from_tensor(&self.weight).ok()
        } else {
            None
        }
    }

    /// The bias, if any (never quantized).
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    // A poisoned lock only means another thread panicked while holding it;
    // the Option inside is still a valid value, so use it.
    fn read_mixture(&self) -> RwLockReadGuard<'_, Option<GaussianMixture>> {
        self.mixture.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The layer's mixture, if one is set (a cheap clone sharing the `Var`s).
    pub fn mixture(&self) -> Option<GaussianMixture> {
        self.read_mixture().clone()
    }

    /// Whether a mixture is set.
    pub fn has_mixture(&self) -> bool {
        self.read_mixture().is_some()
    }

    /// Sets (or with `None` removes) the mixture, replacing any previous one.
    pub fn set_mixture(&self, mixture: Option<GaussianMixture>) {
        let mut guard = self.mixture.write().unwrap_or_else(|e| e.into_inner());
        *guard = mixture;
    }

    /// The layer's uniform grid, if one is set (a cheap clone sharing its
    /// step `Var`).
    pub fn uniform(&self) -> Option<UniformQuantizer> {
        self.uniform
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets (or with `None` removes) the uniform grid.
    pub fn set_uniform(&self, quantizer: Option<UniformQuantizer>) {
        let mut guard = self.uniform.write().unwrap_or_else(|e| e.into_inner());
        *guard = quantizer;
    }

    /// The hard weights under the current mixture, or `None` without one.
    pub fn hard_weight(&self) -> Result<Option<Tensor>> {
        match self.mixture() {
            Some(m) => Ok(Some(m.hard_weights(&self.weight)?)),
            None => Ok(None),
        }
    }

    /// The weight the forward pass uses: plain, soft (`train`) or hard.
    pub fn effective_weight(&self, train: bool) -> Result<Tensor> {
        if let Some(m) = self.mixture() {
            return Ok(if train {
                m.soft_weights(&self.weight)?
            } else {
                m.hard_weights(&self.weight)?
            });
        }
        match self.uniform() {
            None => Ok(self.weight.clone()),
            Some(u) if train => Ok(u.fake_quantized(&self.weight)?),
            Some(u) => Ok(u.hard_weights(&self.weight)?),
        }
    }

    /// Forward pass with the given train flag, errors naming the layer.
    pub fn forward_checked(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let w = self.effective_weight(train)?;
        let wrap = |source| ModelError::Forward {
            layer: self.name.clone(),
            source,
        };
        let y = self
            .backend
            .conv2d(x, &w, self.spec.stride, self.spec.padding, self.spec.groups)
            .map_err(wrap)?;
        match &self.bias {
            None => Ok(y),
            Some(b) => {
                let b = b.reshape((1, (), 1, 1)).map_err(wrap)?;
                y.broadcast_add(&b).map_err(wrap)
            }
        }
    }
}

impl candle_nn::ModuleT for QConv2d {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_checked(x, train)
            .map_err(ModelError::into_candle)
    }
}
