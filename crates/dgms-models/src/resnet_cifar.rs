//! CIFAR ResNet-20/32/56 (He et al. 2016, section 4.2), as in the DGMS
//! authors' code: a 3x3 stem conv with 16 channels, three stages of n basic
//! blocks with 16/32/64 channels (depth = 6n + 2), option-A shortcuts, global
//! average pooling and a linear classifier named `linear`.

use candle_core::Tensor;
use candle_nn::{Linear, ModuleT, VarBuilder};

use crate::batch_norm::{batch_norm, BatchNorm};
use crate::error::{ModelError, Result};
use crate::model::{DgmsModel, ModelConfig};
use crate::qconv::{ConvSpec, QConv2d};

/// Channels of the three stages.
const STAGE_CHANNELS: [usize; 3] = [16, 32, 64];

/// Option-A shortcut: `x[:, :, ::2, ::2]` (when strided) and zero channels
/// added on both sides (`planes / 4` each, as the authors' `F.pad` does), so
/// the shortcut has no parameters.
#[derive(Debug, Clone, Copy)]
struct ShortcutA {
    stride: usize,
    pad: usize,
}

impl ShortcutA {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        if self.stride > 1 {
            // candle has no strided slicing: select rows and columns 0, s, 2s, ...
            for dim in [2, 3] {
                let n = x.dim(dim)?;
                let idx: Vec<u32> = (0..n).step_by(self.stride).map(|i| i as u32).collect();
                let len = idx.len();
                let idx = Tensor::from_vec(idx, len, x.device())?;
                x = x.index_select(&idx, dim)?;
            }
        }
        if self.pad > 0 {
            x = x.pad_with_zeros(1, self.pad, self.pad)?;
        }
        Ok(x)
    }
}

/// conv-bn-relu-conv-bn, plus the shortcut, then relu.
#[derive(Debug)]
struct BasicBlock {
    conv1: QConv2d,
    bn1: BatchNorm,
    conv2: QConv2d,
    bn2: BatchNorm,
    shortcut: Option<ShortcutA>,
}

impl BasicBlock {
    fn new(in_planes: usize, planes: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let conv1 = QConv2d::new(
            ConvSpec::new(in_planes, planes, 3).stride(stride),
            vb.pp("conv1"),
        )?;
        let bn1 = batch_norm(planes, vb.pp("bn1"))?;
        let conv2 = QConv2d::new(ConvSpec::new(planes, planes, 3), vb.pp("conv2"))?;
        let bn2 = batch_norm(planes, vb.pp("bn2"))?;
        let shortcut = (stride != 1 || in_planes != planes).then_some(ShortcutA {
            stride,
            pad: planes / 4,
        });
        Ok(Self {
            conv1,
            bn1,
            conv2,
            bn2,
            shortcut,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let out = self.conv1.forward_t(x, train)?;
        let out = self.bn1.forward_t(&out, train)?.relu()?;
        let out = self.conv2.forward_t(&out, train)?;
        let out = self.bn2.forward_t(&out, train)?;
        let short = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        (out + short)?.relu()
    }
}

/// CIFAR ResNet with option-A shortcuts; parameter names as in the authors'
/// code (`conv1`, `bn1`, `layer{1,2,3}.{i}.{conv,bn}{1,2}`, `linear`).
#[derive(Debug)]
pub struct ResNetCifar {
    name: String,
    conv1: QConv2d,
    bn1: BatchNorm,
    blocks: Vec<BasicBlock>,
    linear: Linear,
}

impl ResNetCifar {
    /// A ResNet of the given depth (6n + 2 with n >= 1: 20, 32, 44, 56, 110).
    pub fn new(depth: usize, cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let name = format!("resnet{depth}");
        cfg.validate(&name)?;
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(ModelError::Config {
                model: name,
                what: format!("depth {depth}, expected 6n + 2 with n >= 1 (20, 32, 56, ...)"),
            });
        }
        let n = (depth - 2) / 6;
        let conv1 = QConv2d::new(
            ConvSpec::new(cfg.in_channels, STAGE_CHANNELS[0], 3),
            vb.pp("conv1"),
        )?;
        let bn1 = batch_norm(STAGE_CHANNELS[0], vb.pp("bn1"))?;
        let mut blocks = Vec::with_capacity(3 * n);
        let mut in_planes = STAGE_CHANNELS[0];
        for (s, &planes) in STAGE_CHANNELS.iter().enumerate() {
            let vs = vb.pp(format!("layer{}", s + 1));
            for i in 0..n {
                let stride = if s > 0 && i == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(in_planes, planes, stride, vs.pp(i))?);
                in_planes = planes;
            }
        }
        let linear = candle_nn::linear(in_planes, cfg.num_classes, vb.pp("linear"))
            .map_err(|e| ModelError::load("linear", e))?;
        Ok(Self {
            name,
            conv1,
            bn1,
            blocks,
            linear,
        })
    }

    /// ResNet-20 (n = 3).
    pub fn resnet20(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Self::new(20, cfg, vb)
    }

    /// ResNet-32 (n = 5).
    pub fn resnet32(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Self::new(32, cfg, vb)
    }

    /// ResNet-56 (n = 9).
    pub fn resnet56(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Self::new(56, cfg, vb)
    }
}

impl ModuleT for ResNetCifar {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut out = self.conv1.forward_t(x, train)?;
        out = self.bn1.forward_t(&out, train)?.relu()?;
        for block in &self.blocks {
            out = block.forward_t(&out, train)?;
        }
        // Global average pooling (the authors pool with kernel = width,
        // which is the same for square inputs).
        let pooled = out.mean((2, 3))?;
        self.linear.forward_t(&pooled, train)
    }
}

impl DgmsModel for ResNetCifar {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn convs(&self) -> Vec<&QConv2d> {
        std::iter::once(&self.conv1)
            .chain(self.blocks.iter().flat_map(|b| [&b.conv1, &b.conv2]))
            .collect()
    }

    fn classifier_name(&self) -> &str {
        "linear"
    }
}
