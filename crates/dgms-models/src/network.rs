//! [`Network`]: the trainable candle model of any [`Architecture`], built
//! by walking its description. Each layer becomes the module that runs it
//! (a [`QConv2d`] for every convolution, so any of them can carry a
//! mixture); parameters are created in the description's order under its
//! names, so PyTorch state dicts load as they are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
    /// A batch norm and the ReLU after it, run as one op in training.
    BatchNormRelu(BatchNorm),
    Act(Activation),
    MaxPool(MaxPool),
    Block {
        body: Vec<Module>,
        shortcut: Option<Join>,
    },
    /// A residual block whose body ends in a batch norm, and the ReLU
    /// after the block: `relu(bn(body(x)) + shortcut(x))`, the batch norm,
    /// the add and the ReLU run as one op in training.
    ResidualRelu {
        body: Vec<Module>,
        bn: BatchNorm,
        shortcut: Join,
    },
    GlobalAvgPool,
    Flatten,
    Dropout(Dropout),
    Linear(candle_nn::Linear),
}

/// Dropout with probability `p`, its mask drawn from the network's
/// dropout seed and this layer's ordinal (candle's own dropout draws from
/// its CPU generator, which cannot be seeded, so a resumed run would
/// differ from an uninterrupted one).
#[derive(Debug)]
struct Dropout {
    p: f32,
    ordinal: u64,
    seed: Arc<AtomicU64>,
}

/// SplitMix64: a small, well-mixed generator for dropout masks.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Dropout {
    /// As `candle_nn::ops::dropout`: elements kept with probability 1 - p
    /// and scaled by 1 / (1 - p), the mask a function of the seed only.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if !(0.0..1.0).contains(&self.p) {
            candle_core::bail!("dropout probability {} not in [0, 1)", self.p);
        }
        let mut state = self.seed.load(Ordering::SeqCst) ^ splitmix64(&mut self.ordinal.clone());
        let scale = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| {
                // 24 random bits: a uniform draw in [0, 1) exact in f32.
                let u = (splitmix64(&mut state) >> 40) as f32 / (1u32 << 24) as f32;
                if u >= self.p {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.dims(), x.device())?.to_dtype(x.dtype())?;
        x * mask
    }
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
    /// Shared with every [`Dropout`] layer.
    dropout_seed: Arc<AtomicU64>,
}

impl Network {
    /// Creates (or, from tensors, loads) the parameters of `arch` under
    /// its names in `vb`; convolutions and batch norms run on `backend`.
    pub fn new(arch: Architecture, backend: ConvBackend, vb: VarBuilder) -> Result<Self> {
        let dropout_seed = Arc::new(AtomicU64::new(0));
        let builder = Builder {
            arch: &arch,
            backend,
            dropout_seed: dropout_seed.clone(),
            dropouts: AtomicU64::new(0),
        };
        let modules = builder.sequence(&arch.layers, &vb)?;
        Ok(Self {
            arch,
            modules,
            dropout_seed,
        })
    }

    /// The description the network was built from.
    pub fn architecture(&self) -> &Architecture {
        &self.arch
    }
}

struct Builder<'a> {
    arch: &'a Architecture,
    backend: ConvBackend,
    dropout_seed: Arc<AtomicU64>,
    /// Dropout layers built so far (each gets its ordinal).
    dropouts: AtomicU64,
}

impl Builder<'_> {
    /// The modules of `layers`, a batch norm or a residual block followed
    /// by a ReLU fused with it (their parameters created in the same order
    /// as unfused).
    fn sequence(&self, layers: &[Layer], vb: &VarBuilder) -> Result<Vec<Module>> {
        let mut out: Vec<Module> = Vec::with_capacity(layers.len());
        let mut i = 0;
        while i < layers.len() {
            let relu_next = matches!(layers.get(i + 1), Some(Layer::Act(Activation::Relu)));
            let fused = match &layers[i] {
                Layer::BatchNorm(bn) if relu_next => {
                    Some(Module::BatchNormRelu(self.batch_norm(bn, vb)?))
                }
                Layer::Block(b) if relu_next => self.residual_relu(b, vb)?,
                _ => None,
            };
            match fused {
                Some(m) => {
                    out.push(m);
                    i += 2;
                }
                None => {
                    let m = self.layer(&layers[i], &out, vb)?;
                    out.push(m);
                    i += 1;
                }
            }
        }
        Ok(out)
    }

    fn batch_norm(&self, bn: &dgms_arch::BatchNorm, vb: &VarBuilder) -> Result<BatchNorm> {
        batch_norm_with(
            bn.channels,
            (self.arch.batch_norm_eps, self.arch.batch_norm_momentum),
            self.backend,
            vb.pp(&bn.name),
        )
    }

    /// [`Module::ResidualRelu`] for a block with a shortcut whose body ends
    /// in a batch norm; `None` (nothing built) for any other block.
    fn residual_relu(&self, b: &dgms_arch::Block, vb: &VarBuilder) -> Result<Option<Module>> {
        let (Some(Layer::BatchNorm(last)), Some(shortcut)) = (b.body.last(), &b.shortcut) else {
            return Ok(None);
        };
        let body = self.sequence(&b.body[..b.body.len() - 1], vb)?;
        let bn = self.batch_norm(last, vb)?;
        let shortcut = self.join(shortcut, vb)?;
        Ok(Some(Module::ResidualRelu { body, bn, shortcut }))
    }

    fn join(&self, shortcut: &Shortcut, vb: &VarBuilder) -> Result<Join> {
        Ok(match shortcut {
            Shortcut::Identity => Join::Identity,
            Shortcut::ZeroPad { stride, pad } => Join::ZeroPad {
                stride: *stride,
                pad: *pad,
            },
            Shortcut::Projection(p) => Join::Projection(self.sequence(p, vb)?),
        })
    }

    /// One layer, unfused; `out` is what was built before it.
    fn layer(&self, layer: &Layer, out: &[Module], vb: &VarBuilder) -> Result<Module> {
        Ok(match layer {
            Layer::Conv(c) => {
                let spec = ConvSpec::from(c);
                Module::Conv(QConv2d::with_backend(spec, self.backend, vb.pp(&c.name))?)
            }
            Layer::BatchNorm(bn) => Module::BatchNorm(self.batch_norm(bn, vb)?),
            Layer::Act(a) => Module::Act(*a),
            Layer::MaxPool(p) => {
                // Zero padding equals PyTorch's -inf padding only on
                // inputs >= 0 (see `padded_max_pool`).
                let after_act = matches!(
                    out.last(),
                    Some(Module::Act(_) | Module::BatchNormRelu(_) | Module::ResidualRelu { .. })
                );
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
                    Some(s) => Some(self.join(s, vb)?),
                },
            },
            Layer::GlobalAvgPool => Module::GlobalAvgPool,
            Layer::Flatten => Module::Flatten,
            Layer::Dropout(p) => Module::Dropout(Dropout {
                p: *p,
                ordinal: self.dropouts.fetch_add(1, Ordering::Relaxed),
                seed: self.dropout_seed.clone(),
            }),
            Layer::Linear(l) => {
                let linear = candle_nn::linear(l.in_features, l.out_features, vb.pp(&l.name))
                    .map_err(|e| ModelError::load(&l.name, e))?;
                Module::Linear(linear)
            }
        })
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
            Module::BatchNormRelu(bn) => bn.forward_relu_t(x, None, train),
            Module::Act(Activation::Relu) => x.relu(),
            Module::Act(Activation::Relu6) => x.clamp(0f32, 6f32),
            Module::MaxPool(p) if p.padding == 0 => x.max_pool2d_with_stride(p.kernel, p.stride),
            Module::MaxPool(p) => padded_max_pool(x, p),
            Module::Block { body, shortcut } => {
                let out = forward_all(body, x, train)?;
                match shortcut {
                    None => Ok(out),
                    Some(join) => out + join.forward_t(x, train)?,
                }
            }
            Module::ResidualRelu { body, bn, shortcut } => {
                let out = forward_all(body, x, train)?;
                let residual = shortcut.forward_t(x, train)?;
                bn.forward_relu_t(&out, Some(&residual), train)
            }
            // AdaptiveAvgPool2d((1, 1)) and flatten (the authors' CIFAR
            // ResNets pool with kernel = width, the same for square inputs).
            Module::GlobalAvgPool => x.mean((2, 3)),
            // PyTorch's `x.view(N, -1)`: channel-major flattening.
            Module::Flatten => x.flatten_from(1),
            Module::Dropout(d) if train => d.forward(x),
            Module::Dropout(_) => Ok(x.clone()),
            Module::Linear(l) => l.forward_t(x, train),
        }
    }
}

impl ModuleT for Join {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Join::Identity => Ok(x.clone()),
            Join::ZeroPad { stride, pad } => zero_pad_shortcut(x, *stride, *pad),
            Join::Projection(p) => forward_all(p, x, train),
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
            Module::ResidualRelu { body, shortcut, .. } => {
                collect_convs(body, out);
                if let Join::Projection(p) = shortcut {
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

    fn set_dropout_seed(&self, seed: u64) {
        self.dropout_seed.store(seed, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use dgms_arch::MaxPool;

    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    use super::{padded_max_pool, Dropout};

    fn dropout(seed: u64, ordinal: u64) -> Dropout {
        Dropout {
            p: 0.25,
            ordinal,
            seed: Arc::new(AtomicU64::new(seed)),
        }
    }

    /// The mask is a function of (seed, layer) alone: the same seed gives
    /// the same output bit for bit, another seed or layer another mask;
    /// kept elements are scaled by 1 / (1 - p), about p of them dropped.
    #[test]
    fn dropout_is_seeded() {
        let x = Tensor::ones((4, 1000), candle_core::DType::F32, &Device::Cpu).unwrap();
        let run = |d: &Dropout| -> Vec<f32> {
            d.forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let a = run(&dropout(7, 0));
        assert_eq!(a, run(&dropout(7, 0)));
        assert_ne!(a, run(&dropout(8, 0)));
        assert_ne!(a, run(&dropout(7, 1)));
        assert!(a.iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));
        let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
        assert!((dropped - 0.25).abs() < 0.03, "dropped {dropped}");
    }

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
