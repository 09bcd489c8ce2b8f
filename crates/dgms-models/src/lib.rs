//! # dgms-models
//!
//! Models in candle whose convolutions can carry DGMS Gaussian mixtures:
//! the CIFAR ResNet-20/32/56 (option-A shortcuts) and VGG-Small with the
//! DGMS authors' parameter names, and torchvision's ImageNet ResNet-18/50,
//! MobileNetV2 and MNASNet 1.0 with torchvision's, so their state dicts
//! load as they are (safetensors, or PyTorch `.pth` files via [`pth`]).
//!
//! No network is written here: each is one declarative description in
//! [`dgms_arch`], and [`Network`] builds the trainable model of any
//! description (the same one `dgms-qsimd`'s engine is built from).
//!
//! - [`QConv2d`]: a convolution with an optional [`dgms_core::GaussianMixture`]:
//!   plain weights without one, soft weights in training, hard weights in
//!   evaluation. Every convolution runs through [`ConvBackend::conv2d`] on
//!   the backend its model was built with ([`build_model_with_backend`];
//!   the im2col op by default), so models on different backends can live
//!   side by side.
//! - [`DgmsModel`]: the models' common trait (a `candle_nn::ModuleT`, the
//!   train flag reaching every layer): the convolutions by name,
//!   [`DgmsModel::enable_mixtures`] with a [`LayerSelection`] (docs/METHOD.md#layers:
//!   by default every convolution but the first; the classifier
//!   stays full precision), [`DgmsModel::mixtures`] for the optimizer and
//!   checkpoints.
//! - [`build_model`] for `resnet20`, `resnet32`, `resnet56`, `vggsmall`,
//!   `resnet18`, `resnet50`, `mobilenet_v2`, `mnasnet1_0` ([`MODEL_NAMES`]).
//! - Batch norm has PyTorch's semantics (the fused op of [`batch_norm_op`]
//!   in training, fused further with a following ReLU and a residual add
//!   before it by [`batch_norm_relu_op`] ([`affine_relu_op`] in
//!   evaluation), or candle-nn's on the candle
//!   backend), with its running
//!   statistics as `Var`s of the `VarMap`; [`is_batch_norm_stat`] tells a trainer which parameters to
//!   keep out of the optimizer and weight decay.
//! - [`load_varmap`] overwrites a `VarMap`'s `Var`s from a safetensors or
//!   `.pth` file; [`load_tensors`] reads either into a map by name.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use dgms_core::{InitConfig, MixtureOptions};
//! use dgms_models::{build_model, DgmsModel, LayerSelection, ModelConfig};
//!
//! // Build on a VarMap (here randomly initialised; a trainer would then
//! // call `load_varmap` with pretrained parameters).
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let model = build_model("resnet20", &ModelConfig::default(), vb)?;
//!
//! // Mixtures with K = 4 on every conv but the first.
//! let init = InitConfig { k: 4, ..InitConfig::default() };
//! let outcomes =
//!     model.enable_mixtures(&init, &MixtureOptions::default(), &LayerSelection::default())?;
//! assert_eq!(outcomes.len(), 18);
//! assert!(!model.convs()[0].has_mixture());
//!
//! // Training forward (soft weights) and backward.
//! let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu)?;
//! let loss = model.forward_t(&x, true)?.sqr()?.mean_all()?;
//! let grads = loss.backward()?;
//! for var in model.mixture_trainable_vars() {
//!     assert!(grads.get(var.as_tensor()).is_some());
//! }
//!
//! // Evaluation forward: hard weights.
//! let logits = model.forward_t(&x, false)?;
//! assert_eq!(logits.dims(), &[2, 10]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod affine_relu_op;
pub mod batch_norm;
pub mod batch_norm_op;
pub mod batch_norm_relu_op;
pub mod checkpoint;
pub mod conv;
pub mod conv_op;
pub mod error;
pub mod model;
pub mod network;
pub mod pth;
pub mod pth_scan;
pub mod qconv;
pub mod reference_format;
pub mod selection;

pub use batch_norm::{is_batch_norm_stat, BATCH_NORM_STAT_SUFFIXES};
pub use checkpoint::{is_pth, load_tensors, load_varmap, set_varmap};
pub use conv::ConvBackend;
pub use dgms_arch;
pub use error::{ModelError, Result};
pub use model::{build_model, build_model_with_backend, DgmsModel, ModelConfig, MODEL_NAMES};
pub use network::Network;
pub use pth::read_pth;
pub use qconv::{ConvSpec, QConv2d};
pub use reference_format::{is_reference_state_dict, ReferenceStateDict};
pub use selection::{LayerPredicate, LayerSelection};
