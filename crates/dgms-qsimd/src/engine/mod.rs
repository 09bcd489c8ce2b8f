//! The inference engine: runs a [`PackedModel`] on the bit-packed kernels,
//! with no candle at run time.
//!
//! [`Engine::new`] builds the layer graph of `meta.arch` (one of
//! [`SUPPORTED_ARCHS`]: the CIFAR ResNet-20/32/56 with option-A shortcuts,
//! VGG-Small, torchvision's ResNet-18, ResNet-50, MobileNetV2 and MNASNet 1.0), checking
//! that every tensor the architecture needs is present with the right
//! shape and that the file holds nothing else. Quantized layers become the
//! kernels' [`QMatrix`] (O x C*kh*kw, decoded inside the kernels);
//! full-precision ones are used as f32. Folded batch norm, conv bias, the
//! residual add and the ReLU (or ReLU6) are fused into the convolution's
//! output stage: `y = relu(conv(x)*scale +
//! shift + shortcut)`.
//!
//! [`Engine::with_precision`] with [`Precision::Int8`] runs the quantized
//! layers on the int8 fast path instead (int8 codebook, activations
//! quantized per output pixel).
//!
//! [`Engine::run`] takes images N x C x H x W and returns logits
//! N x classes. Activation buffers are allocated on the first run and reused
//! (grown only for a larger batch).
//!
//! ```no_run
//! use dgms_qsimd::{engine::Engine, format::PackedModel, kernels::Isa};
//! let model = PackedModel::read("resnet20.dgms.safetensors")?;
//! let mut engine = Engine::new(&model, Isa::detect())?;
//! let [c, h, w] = engine.input_shape();
//! let logits = engine.run(&vec![0.0; 2 * c * h * w], 2)?;
//! assert_eq!(logits.len(), 2 * engine.num_classes());
//! # Ok::<(), dgms_qsimd::QsimdError>(())
//! ```
//!
//! [`QMatrix`]: crate::kernels::QMatrix

mod arch;
mod build;
pub mod export;
mod graph;
mod ops;
mod profile;
pub mod reference;

pub use arch::SUPPORTED_ARCHS;
pub use profile::OpTime;

use crate::error::{QsimdError, Result};
use crate::format::PackedModel;
use crate::kernels::Isa;

use build::{Builder, WeightMode};
use graph::{Op, Workspace};

/// Upper bound on the activation and im2col buffers of one pass. A larger
/// batch runs in several passes of as many images as fit (at least one).
const WORKSPACE_BYTES: usize = 256 << 20;

/// Upper bound on the largest im2col matrix of one pass (at least one
/// image). The GEMM reads the matrix right after im2col writes it; while
/// it stays in the last-level cache that read is cheap, beyond it every
/// value makes a round trip to memory. Measured on ResNet-18 at 224x224
/// (7.4 MB per image, one thread, CPU time on a 32 MiB-L3 machine): 8
/// images in one pass cost about 1.3x as much per image as passes of one.
const PASS_COLS_BYTES: usize = 8 << 20;

/// How the engine computes its quantized layers.
///
/// Layers kept in full precision (the first convolution, the classifier of
/// the CIFAR models) run in f32 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 activations times the decoded f32 codebook values: the
    /// hard-weight model's outputs up to summation order.
    #[default]
    Exact,
    /// The int8 fast path ([`gemm_i8`], [`conv2d_i8`]): the codebook
    /// mapped to int8 with one scale per layer, activations quantized to
    /// int8 per output pixel (per column of the im2col matrix) on the fly,
    /// sums exact in i32. Faster; costs a little accuracy (measured in the
    /// README).
    ///
    /// [`gemm_i8`]: crate::kernels::gemm_i8
    /// [`conv2d_i8`]: crate::kernels::conv2d_i8
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Exact => "exact",
            Precision::Int8 => "int8",
        })
    }
}

/// A model ready to run: its op list, weights in the kernels' layout and
/// the reusable activation buffers.
///
/// Threading: the images of a pass are one GEMM per convolution (images
/// are GEMM columns, see the layout notes in `ops`), and the kernels split
/// each GEMM over rayon's threads. Chosen over running images in parallel
/// because every weight panel is then decoded once per pass instead of once
/// per image, the small late-stage maps (8x8, 7x7) still give every thread
/// enough columns (and batch 1 uses every thread too), and one set of
/// buffers serves all threads.
#[derive(Debug)]
pub struct Engine {
    arch: String,
    isa: Isa,
    precision: Precision,
    input_shape: [usize; 3],
    num_classes: usize,
    ops: Vec<Op>,
    output_slot: usize,
    slot_lens: Vec<usize>,
    cols_len: usize,
    weight_bytes: usize,
    workspace_limit: usize,
    ws: Workspace,
}

impl Engine {
    /// Builds the engine for `model` on the kernels of `isa`.
    ///
    /// Errors: `isa` not available on this CPU, an architecture the engine
    /// does not know ([`QsimdError::UnknownArch`]), a missing, misshapen or
    /// unused tensor ([`QsimdError::Graph`], naming the layer).
    pub fn new(model: &PackedModel, isa: Isa) -> Result<Engine> {
        Self::with_precision(model, isa, Precision::Exact)
    }

    /// [`Engine::new`] with the quantized layers on the `precision` path.
    pub fn with_precision(model: &PackedModel, isa: Isa, precision: Precision) -> Result<Engine> {
        isa.ensure_available()?;
        Self::build(model, isa, WeightMode::Packed(precision))
    }

    /// Builds the graph with the quantized layers stored as `mode` says.
    fn build(model: &PackedModel, isa: Isa, mode: WeightMode) -> Result<Engine> {
        let meta = &model.meta;
        meta.validate()?;
        if !SUPPORTED_ARCHS.contains(&meta.arch.as_str()) {
            return Err(QsimdError::UnknownArch {
                arch: meta.arch.clone(),
                supported: SUPPORTED_ARCHS.join(", "),
            });
        }
        let input_shape: [usize; 3] =
            meta.input_shape
                .as_slice()
                .try_into()
                .map_err(|_| QsimdError::Graph {
                    arch: meta.arch.clone(),
                    layer: "input".into(),
                    reason: format!("input_shape {:?}, expected [C, H, W]", meta.input_shape),
                })?;
        let mut b = Builder::new(model, mode);
        let [c, h, w] = input_shape;
        let x = b.input(c, h, w);
        let logits = arch::build(&mut b, &meta.arch, x, meta.num_classes)?;
        b.check_all_used()?;
        let weight_bytes = b.ops.iter().map(op_weight_bytes).sum();
        Ok(Engine {
            arch: meta.arch.clone(),
            isa,
            precision: match mode {
                WeightMode::Packed(p) => p,
                WeightMode::Decoded => Precision::Exact,
            },
            input_shape,
            num_classes: meta.num_classes,
            ops: b.ops,
            output_slot: logits.slot,
            slot_lens: b.slot_lens,
            cols_len: b.cols_len,
            weight_bytes,
            workspace_limit: WORKSPACE_BYTES,
            ws: Workspace::default(),
        })
    }

    /// The kernels' instruction set.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// How the quantized layers are computed.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The architecture name (`meta.arch`).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Input shape of one image, [C, H, W].
    pub fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }

    /// Logits per image.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Bytes of weights held in memory (kernel layout, codebooks, f32 layers).
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Images per pass: a batch larger than this runs in several passes so
    /// that the activation buffers stay within the workspace limit and the
    /// largest im2col matrix within about 8 MiB (see `PASS_COLS_BYTES`).
    pub fn max_images_per_pass(&self) -> usize {
        let by_workspace = self.workspace_limit / self.workspace_bytes_per_image();
        let by_cache = PASS_COLS_BYTES / (4 * self.cols_len).max(1);
        by_workspace.min(by_cache).max(1)
    }

    /// Activation and im2col buffer bytes one image needs.
    pub fn workspace_bytes_per_image(&self) -> usize {
        (4 * (self.slot_lens.iter().sum::<usize>() + self.cols_len)).max(1)
    }

    /// Caps the activation buffers at about `bytes` (default 256 MiB; at
    /// least one image per pass whatever the cap). Buffers already
    /// allocated for a larger batch are kept.
    pub fn set_workspace_limit(&mut self, bytes: usize) {
        self.workspace_limit = bytes;
    }

    /// Runs `n` images (`input`: N x C x H x W, row-major) and returns the
    /// logits, N x classes. Errors if `input` does not hold exactly
    /// `n` images of [`Engine::input_shape`].
    pub fn run(&mut self, input: &[f32], n: usize) -> Result<Vec<f32>> {
        let [c, h, w] = self.input_shape;
        let image = c * h * w;
        if n.checked_mul(image) != Some(input.len()) {
            return Err(QsimdError::Input {
                reason: format!(
                    "{} values for {n} images of {c}x{h}x{w} ({} expected for {}); the model takes N x {c} x {h} x {w}",
                    input.len(),
                    n.saturating_mul(image),
                    self.arch
                ),
            });
        }
        let classes = self.num_classes;
        let mut logits = vec![0.0f32; n * classes];
        let per_pass = self.max_images_per_pass().min(n);
        on_pool(|| -> Result<()> {
            for (i, images) in input.chunks(per_pass.max(1) * image).enumerate() {
                let m = images.len() / image;
                let out = &mut logits[i * per_pass * classes..(i * per_pass + m) * classes];
                self.run_pass(images, m, out)?;
            }
            Ok(())
        })?;
        Ok(logits)
    }

    /// One pass of `m` images into `out` (m x classes).
    fn run_pass(&mut self, input: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        let [c, h, w] = self.input_shape;
        self.ws.reserve(&self.slot_lens, self.cols_len, m);
        ops::nchw_to_cnhw(input, (m, c, h * w), &mut self.ws.slots[0][..input.len()]);
        for op in &self.ops {
            graph::execute(op, self.isa, &mut self.ws, m).map_err(|e| QsimdError::InGraph {
                arch: self.arch.clone(),
                layer: op.name.clone(),
                source: Box::new(e),
            })?;
        }
        let classes = self.num_classes;
        let y = &self.ws.slots[self.output_slot][..classes * m];
        ops::transpose(y, (classes, m), out);
        Ok(())
    }
}

/// Runs `f` on a thread of rayon's global pool (the calling thread if it
/// is one). A pass has dozens of parallel sections (several per layer);
/// forked from a worker, each one's halves are taken by the idle peers,
/// while from any other thread each section is injected into the pool
/// and the caller sleeps until it is done: a wake-up and two context
/// switches per section, which at one thread is all overhead.
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

fn op_weight_bytes(op: &Op) -> usize {
    match &op.kind {
        graph::Kind::Conv(c) => c.w.bytes(),
        graph::Kind::Depthwise(d) => d.w.bytes(),
        graph::Kind::Linear { w, .. } => w.bytes(),
        _ => 0,
    }
}
