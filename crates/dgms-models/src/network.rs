//! [`Network`]: the trainable candle model of any [`Architecture`], built
//! by walking its description. Each layer becomes the module that runs it
//! (a [`QConv2d`] for every convolution, so any of them can carry a
//! mixture); parameters are created in the description's order under its
//! names, so PyTorch state dicts load as they are.

use candle_core::Tensor;
use candle_nn::{ModuleT, VarBuilder};
use dgms_arch::{Activation, Architecture, Layer, MaxPool, Shortcut};

use crate::batch_norm::{batch_norm_with, BatchNorm};
use crate::conv::ConvBackend;
use crate::error::{ModelError, Result};
use crate::model::DgmsModel;
use crate::qconv::{ConvSpec, QConv2d};

/// One layer, built.
#[derive(Debug)]
enum Module {
    Conv(QConv2d),
    BatchNorm(BatchNorm),
    Act(Activation),
    MaxPool(MaxPool),
    Block {
        body: Vec<Module>,
        shortcut: Option<Join>,
    },
    GlobalAvgPool,
    Flatten,
    Dropout(f32),
    Linear(candle_nn::Linear),
}

/// What a block adds to its body's output.
#[derive(Debug)]
enum Join {
    Identity,
    ZeroPad { stride: usize, pad: usize },
    Projection(Vec<Module>),
}

/// A classification network built from its description, whose
/// convolutions can carry DGMS mixtures.
#[derive(Debug)]
pub struct Network {
    arch: Architecture,
    modules: Vec<Module>,
}

impl Network {
    /// Creates (or, from tensors, loads) the parameters of `arch` under
    /// its names in `vb`; convolutions and batch norms run on `backend`.
    pub fn new(arch: Architecture, backend: ConvBackend, vb: VarBuilder) -> Result<Self> {
        let builder = Builder {
            arch: &arch,
            backend,
        };
        let modules = builder.sequence(&arch.layers, &vb)?;
        Ok(Self { arch, modules })
    }

    /// The description the network was built from.
    pub fn architecture(&self) -> &Architecture {
        &self.arch
    }
}

struct Builder<'a> {
    arch: &'a Architecture,
    backend: ConvBackend,
}

impl Builder<'_> {
    fn sequence(&self, layers: &[Layer], vb: &VarBuilder) -> Result<Vec<Module>> {
        let mut out: Vec<Module> = Vec::with_capacity(layers.len());
        for layer in layers {
            let module = match layer {
                Layer::Conv(c) => {
                    let spec = ConvSpec::from(c);
                    Module::Conv(QConv2d::with_backend(spec, self.backend, vb.pp(&c.name))?)
                }
                Layer::BatchNorm(bn) => Module::BatchNorm(batch_norm_with(
                    bn.channels,
                    self.arch.batch_norm_eps,
                    self.backend,
                    vb.pp(&bn.name),
                )?),
                Layer::Act(a) => Module::Act(*a),
                Layer::MaxPool(p) => {
                    // Zero padding equals PyTorch's -inf padding only on
                    // inputs >= 0 (see `padded_max_pool`).
                    let after_act = matches!(out.last(), Some(Module::Act(_)));
                    if p.padding > 0 && !after_act {
                        return Err(ModelError::Config {
                            model: self.arch.name.clone(),
                            what: format!("{}: a padded max-pool must follow a ReLU", p.name),
                        });
                    }
                    Module::MaxPool(p.clone())
                }
                Layer::Block(b) => Module::Block {
                    body: self.sequence(&b.body, vb)?,
                    shortcut: match &b.shortcut {
                        None => None,
                        Some(Shortcut::Identity) => Some(Join::Identity),
                        Some(Shortcut::ZeroPad { stride, pad }) => Some(Join::ZeroPad {
                            stride: *stride,
                            pad: *pad,
                        }),
                        Some(Shortcut::Projection(p)) => {
                            Some(Join::Projection(self.sequence(p, vb)?))
                        }
                    },
                },
                Layer::GlobalAvgPool => Module::GlobalAvgPool,
                Layer::Flatten => Module::Flatten,
                Layer::Dropout(p) => Module::Dropout(*p),
                Layer::Linear(l) => {
                    let linear = candle_nn::linear(l.in_features, l.out_features, vb.pp(&l.name))
                        .map_err(|e| ModelError::load(&l.name, e))?;
                    Module::Linear(linear)
                }
            };
            out.push(module);
        }
        Ok(out)
    }
}

fn forward_all(modules: &[Module], x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
    let mut out = x.clone();
    for m in modules {
        out = m.forward_t(&out, train)?;
    }
    Ok(out)
}

impl ModuleT for Module {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Module::Conv(c) => c.forward_t(x, train),
            Module::BatchNorm(bn) => bn.forward_t(x, train),
            Module::Act(Activation::Relu) => x.relu(),
            Module::Act(Activation::Relu6) => x.clamp(0f32, 6f32),
            Module::MaxPool(p) if p.padding == 0 => x.max_pool2d_with_stride(p.kernel, p.stride),
            Module::MaxPool(p) => padded_max_pool(x, p),
            Module::Block { body, shortcut } => {
                let out = forward_all(body, x, train)?;
                match shortcut {
                    None => Ok(out),
                    Some(Join::Identity) => out + x,
                    Some(Join::ZeroPad { stride, pad }) => {
                        out + zero_pad_shortcut(x, *stride, *pad)?
                    }
                    Some(Join::Projection(p)) => out + forward_all(p, x, train)?,
                }
            }
            // AdaptiveAvgPool2d((1, 1)) and flatten (the authors' CIFAR
            // ResNets pool with kernel = width, the same for square inputs).
            Module::GlobalAvgPool => x.mean((2, 3)),
            // PyTorch's `x.view(N, -1)`: channel-major flattening.
            Module::Flatten => x.flatten_from(1),
            // Dropout draws from candle's CPU generator, which cannot be
            // seeded, so training passes through it are not reproducible.
            Module::Dropout(p) if train => candle_nn::ops::dropout(x, *p),
            Module::Dropout(_) => Ok(x.clone()),
            Module::Linear(l) => l.forward_t(x, train),
        }
    }
}

/// Option-A shortcut: `x[:, :, ::stride, ::stride]` (when strided) and
/// `pad` zero channels added on both sides, as the authors' `F.pad` does.
fn zero_pad_shortcut(x: &Tensor, stride: usize, pad: usize) -> candle_core::Result<Tensor> {
    let mut x = x.clone();
    if stride > 1 {
        // candle has no strided slicing: select rows and columns 0, s, 2s, ...
        for dim in [2, 3] {
            x = every_nth(&x, dim, x.dim(dim)?, stride)?;
        }
    }
    if pad > 0 {
        x = x.pad_with_zeros(1, pad, pad)?;
    }
    Ok(x)
}

/// Indices 0, step, 2 step, ... below `len` of dimension `dim`.
fn every_nth(x: &Tensor, dim: usize, len: usize, step: usize) -> candle_core::Result<Tensor> {
    let idx: Vec<u32> = (0..len).step_by(step).map(|i| i as u32).collect();
    let n = idx.len();
    x.index_select(&Tensor::from_vec(idx, n, x.device())?, dim)
}

/// A max-pool with padding (ResNet's 3x3, stride-2, padding-1 stem pool),
/// built from ops that have a candle backward pass (candle's `max_pool2d`
/// has none when kernel != stride): per spatial dim, the maximum of
/// `kernel` shifted views, then every `stride`-th window. Exact in value.
/// Zero padding gives what PyTorch's -inf padding gives because the input
/// follows a ReLU (>= 0; the builder checks it) and every window holds at
/// least one input element. Where a window has tied maxima, the gradient is
/// shared among them (candle's `maximum`), where PyTorch gives it all to
/// one; both are valid subgradients.
fn padded_max_pool(x: &Tensor, p: &MaxPool) -> candle_core::Result<Tensor> {
    let mut x = x.clone();
    for dim in [2, 3] {
        let padded = x.pad_with_zeros(dim, p.padding, p.padding)?;
        let windows = padded.dim(dim)? + 1 - p.kernel;
        let mut max = padded.narrow(dim, 0, windows)?;
        for shift in 1..p.kernel {
            max = max.maximum(&padded.narrow(dim, shift, windows)?)?;
        }
        x = every_nth(&max, dim, windows, p.stride)?;
    }
    Ok(x)
}

impl ModuleT for Network {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        forward_all(&self.modules, x, train)
    }
}

/// Every convolution under `modules`, in registration order.
fn collect_convs<'a>(modules: &'a [Module], out: &mut Vec<&'a QConv2d>) {
    for m in modules {
        match m {
            Module::Conv(c) => out.push(c),
            Module::Block { body, shortcut } => {
                collect_convs(body, out);
                if let Some(Join::Projection(p)) = shortcut {
                    collect_convs(p, out);
                }
            }
            _ => {}
        }
    }
}

impl DgmsModel for Network {
    fn model_name(&self) -> &str {
        &self.arch.name
    }

    fn convs(&self) -> Vec<&QConv2d> {
        let mut out = Vec::new();
        collect_convs(&self.modules, &mut out);
        out
    }

    fn classifier_name(&self) -> &str {
        &self.arch.classifier
    }

    fn default_mixture_layers(&self) -> Vec<String> {
        self.arch.default_mixture_layers()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use dgms_arch::MaxPool;

    use super::padded_max_pool;

    /// Against a direct 3x3 / 2 / 1 max-pool with -inf padding.
    #[test]
    fn stem_max_pool_matches_direct() {
        let pool = MaxPool::new("maxpool", 3, 2, 1);
        for (h, w) in [(7, 7), (8, 5), (1, 2)] {
            let x = Tensor::rand(0f32, 1.0, (2, 3, h, w), &Device::Cpu).unwrap();
            let got = padded_max_pool(&x, &pool).unwrap();
            let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
            assert_eq!(got.dims(), &[2, 3, oh, ow]);
            let xv: Vec<Vec<Vec<Vec<f32>>>> = (0..2)
                .map(|n| x.get(n).unwrap().to_vec3().unwrap())
                .collect();
            let gv: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            let mut k = 0;
            for plane in xv.iter().flatten() {
                for i in 0..oh {
                    for j in 0..ow {
                        let rows = (2 * i).saturating_sub(1)..(2 * i + 2).min(h);
                        let cols = (2 * j).saturating_sub(1)..(2 * j + 2).min(w);
                        let m = plane[rows]
                            .iter()
                            .flat_map(|row| &row[cols.clone()])
                            .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                        assert_eq!(gv[k], m);
                        k += 1;
                    }
                }
            }
        }
    }
}
