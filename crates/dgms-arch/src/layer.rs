//! The vocabulary of a description: the layers a network is made of, with
//! their parameter names (torchvision's, or the DGMS authors' for the CIFAR
//! models) and geometry. A network is a list of [`Layer`]s run in order;
//! a [`Block`] holds a sub-list and the residual join around it.

/// A 2-D convolution with square kernel, stride and zero padding, no
/// dilation. Its weight is `NAME.weight` of shape
/// (out, in / groups, kernel, kernel); with `bias`, `NAME.bias` of (out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conv {
    pub name: String,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub bias: bool,
}

impl Conv {
    /// A `kernel` x `kernel` convolution, stride 1, "same" padding
    /// (`kernel / 2`), one group, no bias (PyTorch's `Conv2d(in, out, k,
    /// padding=k // 2, bias=False)`).
    pub fn new(
        name: impl Into<String>,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
    ) -> Self {
        Self {
            name: name.into(),
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: kernel / 2,
            groups: 1,
            bias: false,
        }
    }

    /// The same with another stride.
    pub fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }

    /// The same with a bias.
    pub fn with_bias(self) -> Self {
        Self { bias: true, ..self }
    }

    /// The same as a depthwise convolution (one group per input channel).
    pub fn depthwise(self) -> Self {
        Self {
            groups: self.in_channels,
            ..self
        }
    }

    /// Whether every channel is convolved on its own (groups = in = out > 1).
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels && self.groups == self.out_channels
    }

    /// Shape of `NAME.weight`.
    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels / self.groups.max(1),
            self.kernel,
            self.kernel,
        ]
    }
}

/// Batch norm over the channels (PyTorch's `BatchNorm2d`): `NAME.weight`,
/// `NAME.bias`, `NAME.running_mean`, `NAME.running_var`, each (channels).
/// Its eps is the architecture's [`crate::Architecture::batch_norm_eps`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchNorm {
    pub name: String,
    pub channels: usize,
}

impl BatchNorm {
    pub fn new(name: impl Into<String>, channels: usize) -> Self {
        Self {
            name: name.into(),
            channels,
        }
    }
}

/// An elementwise activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// max(x, 0).
    Relu,
    /// min(max(x, 0), 6) (MobileNetV2).
    Relu6,
}

/// Max-pooling with a square window, floor mode, padding that never wins
/// (PyTorch's -inf). `name` is the module's name (no parameters), used in
/// error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaxPool {
    pub name: String,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl MaxPool {
    pub fn new(name: impl Into<String>, kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            name: name.into(),
            kernel,
            stride,
            padding,
        }
    }

    /// Output length of an axis of `len` (0 when the window does not fit).
    pub fn out_len(&self, len: usize) -> usize {
        if len + 2 * self.padding < self.kernel || self.stride == 0 {
            0
        } else {
            (len + 2 * self.padding - self.kernel) / self.stride + 1
        }
    }
}

/// A fully connected layer with bias: `NAME.weight` (out, in), `NAME.bias`
/// (out), on flattened features.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Linear {
    pub name: String,
    pub in_features: usize,
    pub out_features: usize,
}

impl Linear {
    pub fn new(name: impl Into<String>, in_features: usize, out_features: usize) -> Self {
        Self {
            name: name.into(),
            in_features,
            out_features,
        }
    }
}

/// What a [`Block`] adds to its body's output.
#[derive(Clone, Debug, PartialEq)]
pub enum Shortcut {
    /// The block's input itself.
    Identity,
    /// The CIFAR ResNets' option-A shortcut, as the DGMS authors write it:
    /// `x[:, :, ::stride, ::stride]` with `pad` zero channels added on each
    /// side (`F.pad`); no parameters.
    ZeroPad { stride: usize, pad: usize },
    /// Layers applied to the block's input (torchvision's `downsample`:
    /// a strided 1x1 conv and its batch norm).
    Projection(Vec<Layer>),
}

/// A sub-network run on the block's input, plus an optional residual join:
/// `body(x) + shortcut(x)`. A block without a shortcut is a plain group of
/// layers (a MobileNetV2 inverted residual that changes shape). `name` is
/// the module's prefix (e.g. `layer1.0`, `features.3`).
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub name: String,
    pub body: Vec<Layer>,
    pub shortcut: Option<Shortcut>,
}

/// One step of a network.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    Conv(Conv),
    BatchNorm(BatchNorm),
    Act(Activation),
    MaxPool(MaxPool),
    Block(Block),
    /// Mean over each channel's map, giving (N, C) features (PyTorch's
    /// `AdaptiveAvgPool2d(1)` and `flatten(1)`).
    GlobalAvgPool,
    /// (N, C, H, W) to (N, C*H*W), channel-major (PyTorch's `x.view(N, -1)`).
    Flatten,
    /// Dropout with this probability, in training only.
    Dropout(f32),
    Linear(Linear),
}

/// A convolution followed by its batch norm.
pub fn conv_bn(conv: Conv, bn: impl Into<String>) -> Vec<Layer> {
    let bn = BatchNorm::new(bn, conv.out_channels);
    vec![Layer::Conv(conv), Layer::BatchNorm(bn)]
}

/// A convolution, its batch norm and an activation.
pub fn conv_bn_act(conv: Conv, bn: impl Into<String>, act: Activation) -> Vec<Layer> {
    let mut layers = conv_bn(conv, bn);
    layers.push(Layer::Act(act));
    layers
}
