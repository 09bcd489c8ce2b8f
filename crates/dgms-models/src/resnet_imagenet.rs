//! torchvision's ImageNet ResNets (`torchvision.models.resnet18`, ...,
//! `resnet152`), with its parameter names, so its state dicts (`.pth` or
//! safetensors) load as they are.
//!
//! A 7x7 stride-2 stem conv with 64 channels, batch norm, ReLU and a 3x3
//! stride-2 max-pool; four stages (`layer1` to `layer4`) of basic blocks
//! (ResNet-18/34) or bottlenecks (ResNet-50/101/152) with 64/128/256/512
//! planes; a projection shortcut (`downsample.0` conv 1x1, `downsample.1`
//! batch norm) where the shape changes; global average pooling and a linear
//! classifier `fc`. Bottlenecks put the stride on their 3x3 conv (`conv2`),
//! as torchvision does ("ResNet v1.5").

use candle_core::Tensor;
use candle_nn::{Linear, ModuleT, VarBuilder};

use crate::batch_norm::{batch_norm, BatchNorm};
use crate::error::{ModelError, Result};
use crate::model::{DgmsModel, ModelConfig};
use crate::qconv::{ConvSpec, QConv2d};

/// Planes of the four stages.
const STAGE_PLANES: [usize; 4] = [64, 128, 256, 512];

/// Block type and blocks per stage for each supported depth.
fn layout(depth: usize) -> Option<(bool, [usize; 4])> {
    // (bottleneck?, blocks per stage), as in torchvision.
    match depth {
        18 => Some((false, [2, 2, 2, 2])),
        34 => Some((false, [3, 4, 6, 3])),
        50 => Some((true, [3, 4, 6, 3])),
        101 => Some((true, [3, 4, 23, 3])),
        152 => Some((true, [3, 8, 36, 3])),
        _ => None,
    }
}

/// A convolution followed by its batch norm.
#[derive(Debug)]
struct ConvBn {
    conv: QConv2d,
    bn: BatchNorm,
}

impl ConvBn {
    /// `<conv>` and `<bn>` under `vb`, e.g. `conv1` + `bn1` or
    /// `downsample.0` + `downsample.1`.
    fn new(spec: ConvSpec, vb: &VarBuilder, conv: &str, bn: &str) -> Result<Self> {
        Ok(Self {
            conv: QConv2d::new(spec, vb.pp(conv))?,
            bn: batch_norm(spec.out_channels, vb.pp(bn))?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let out = self.conv.forward_t(x, train)?;
        self.bn.forward_t(&out, train)
    }
}

/// A basic block (`conv1`/`bn1`, `conv2`/`bn2`: two 3x3 convs) or a
/// bottleneck (1x1, 3x3, 1x1 convs `conv1` to `conv3`), a ReLU after every
/// conv-bn but the last, then the shortcut is added and a ReLU applied.
#[derive(Debug)]
struct Block {
    layers: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn new(
        bottleneck: bool,
        in_planes: usize,
        planes: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (specs, out_planes) = if bottleneck {
            let out = planes * 4;
            let specs = vec![
                ConvSpec::new(in_planes, planes, 1),
                ConvSpec::new(planes, planes, 3).stride(stride),
                ConvSpec::new(planes, out, 1),
            ];
            (specs, out)
        } else {
            let specs = vec![
                ConvSpec::new(in_planes, planes, 3).stride(stride),
                ConvSpec::new(planes, planes, 3),
            ];
            (specs, planes)
        };
        let layers = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                let i = i + 1;
                ConvBn::new(spec, &vb, &format!("conv{i}"), &format!("bn{i}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let downsample = if stride != 1 || in_planes != out_planes {
            let spec = ConvSpec::new(in_planes, out_planes, 1).stride(stride);
            Some(ConvBn::new(spec, &vb.pp("downsample"), "0", "1")?)
        } else {
            None
        };
        Ok(Self { layers, downsample })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut out = x.clone();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            out = layer.forward_t(&out, train)?;
            if i < last {
                out = out.relu()?;
            }
        }
        let short = match &self.downsample {
            Some(d) => d.forward_t(x, train)?,
            None => x.clone(),
        };
        (out + short)?.relu()
    }

    /// The block's convolutions in forward order (the shortcut last, as
    /// torchvision registers it).
    fn convs(&self) -> impl Iterator<Item = &QConv2d> {
        self.layers
            .iter()
            .chain(self.downsample.as_ref())
            .map(|l| &l.conv)
    }
}

/// The stem's 3x3, stride-2, padding-1 max-pool, built from ops that have a
/// candle backward pass (candle's `max_pool2d` has none when kernel !=
/// stride): per spatial dim, the maximum of three shifted views, then every
/// other window. Exact in value. Zero padding gives what PyTorch's -inf
/// padding gives because the input follows a ReLU (>= 0) and every window
/// holds at least one input element. Where a window has tied maxima, the
/// gradient is shared among them (candle's `maximum`), where PyTorch gives
/// it all to one; both are valid subgradients.
fn stem_max_pool(x: &Tensor) -> candle_core::Result<Tensor> {
    let mut x = x.clone();
    for dim in [2, 3] {
        let padded = x.pad_with_zeros(dim, 1, 1)?;
        let windows = padded.dim(dim)? - 2;
        let max = padded
            .narrow(dim, 0, windows)?
            .maximum(&padded.narrow(dim, 1, windows)?)?
            .maximum(&padded.narrow(dim, 2, windows)?)?;
        let keep: Vec<u32> = (0..windows).step_by(2).map(|i| i as u32).collect();
        let len = keep.len();
        let keep = Tensor::from_vec(keep, len, x.device())?;
        x = max.index_select(&keep, dim)?;
    }
    Ok(x)
}

/// torchvision ResNet; parameter names `conv1`, `bn1`,
/// `layer{1..4}.{i}.{conv,bn}{1,2[,3]}`, `layer{s}.0.downsample.{0,1}`, `fc`.
#[derive(Debug)]
pub struct ResNet {
    name: String,
    stem: ConvBn,
    blocks: Vec<Block>,
    fc: Linear,
}

impl ResNet {
    /// A ResNet of depth 18, 34, 50, 101 or 152. `cfg.image_size` is not
    /// used: the network pools globally and takes any input size (32x32
    /// gives a 1x1 map before the pooling).
    pub fn new(depth: usize, cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let name = format!("resnet{depth}");
        cfg.validate(&name)?;
        let (bottleneck, counts) = layout(depth).ok_or_else(|| ModelError::Config {
            model: name.clone(),
            what: format!("depth {depth}, expected 18, 34, 50, 101 or 152"),
        })?;
        let stem = ConvBn::new(
            ConvSpec::new(cfg.in_channels, 64, 7).stride(2),
            &vb,
            "conv1",
            "bn1",
        )?;
        let mut blocks = Vec::with_capacity(counts.iter().sum());
        let mut in_planes = 64;
        for (s, (&planes, &n)) in STAGE_PLANES.iter().zip(&counts).enumerate() {
            let vs = vb.pp(format!("layer{}", s + 1));
            for i in 0..n {
                let stride = if s > 0 && i == 0 { 2 } else { 1 };
                blocks.push(Block::new(bottleneck, in_planes, planes, stride, vs.pp(i))?);
                in_planes = if bottleneck { planes * 4 } else { planes };
            }
        }
        let fc = candle_nn::linear(in_planes, cfg.num_classes, vb.pp("fc"))
            .map_err(|e| ModelError::load("fc", e))?;
        Ok(Self {
            name,
            stem,
            blocks,
            fc,
        })
    }

    /// ResNet-18 (basic blocks, 2-2-2-2).
    pub fn resnet18(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Self::new(18, cfg, vb)
    }

    /// ResNet-50 (bottlenecks, 3-4-6-3).
    pub fn resnet50(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Self::new(50, cfg, vb)
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let out = self.stem.forward_t(x, train)?.relu()?;
        let mut out = stem_max_pool(&out)?;
        for block in &self.blocks {
            out = block.forward_t(&out, train)?;
        }
        // AdaptiveAvgPool2d((1, 1)) and flatten.
        let pooled = out.mean((2, 3))?;
        self.fc.forward_t(&pooled, train)
    }
}

impl DgmsModel for ResNet {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn convs(&self) -> Vec<&QConv2d> {
        std::iter::once(&self.stem.conv)
            .chain(self.blocks.iter().flat_map(Block::convs))
            .collect()
    }

    fn classifier_name(&self) -> &str {
        "fc"
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::stem_max_pool;

    /// Against a direct 3x3 / 2 / 1 max-pool with -inf padding.
    #[test]
    fn stem_max_pool_matches_direct() {
        for (h, w) in [(7, 7), (8, 5), (1, 2)] {
            let x = Tensor::rand(0f32, 1.0, (2, 3, h, w), &Device::Cpu).unwrap();
            let got = stem_max_pool(&x).unwrap();
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
