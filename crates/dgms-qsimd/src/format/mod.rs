//! The packed model format (`*.dgms.safetensors`), version 1.
//!
//! A packed file is an ordinary [safetensors] file, so any safetensors
//! library can open it; this page says everything another runtime needs to
//! interpret it. The reader here ([`PackedModel::from_bytes`],
//! [`PackedModel::read`]) enforces every rule below and returns a typed
//! [`QsimdError`](crate::QsimdError) for any violation, never panicking on
//! any byte string.
//!
//! [safetensors]: https://huggingface.co/docs/safetensors
//!
//! # Container
//!
//! `u64` little-endian header length `N`, then `N` bytes of UTF-8 JSON (the
//! header, padded with spaces to a multiple of 8), then the data section.
//! The header maps tensor names to `{"dtype", "shape", "data_offsets":
//! [begin, end]}` (offsets relative to the data section, contiguous, covering
//! it exactly) plus a `"__metadata__"` object of string values. All numbers
//! in tensors are little-endian. This writer emits F32 tensors first and
//! then U8 tensors, each group sorted by name, so every f32 payload is
//! 4-byte aligned in the file; readers must not rely on that order.
//!
//! # `__metadata__` (all keys required, no other keys allowed)
//!
//! | key | value (always a JSON string) |
//! | --- | --- |
//! | `format` | `"dgms-packed"` |
//! | `format_version` | `"1"` (canonical decimal; any other integer is an unsupported version) |
//! | `arch` | non-empty architecture name, e.g. `"resnet20"`, `"resnet18"`, `"vggsmall"` |
//! | `input_shape` | JSON array of positive integers without the batch dimension, `[C,H,W]`, e.g. `"[1,28,28]"` |
//! | `num_classes` | positive canonical decimal integer, e.g. `"10"` |
//! | `layers` | JSON array, one object per quantized layer: `{"name": "layer1.0.conv1", "shape": [O,C,kh,kw], "k": 16, "bits": 4}` (exactly these four fields) |
//!
//! Layer names are non-empty and unique. Canonical decimal: digits only, no
//! sign, no leading zeros.
//!
//! # Quantized layer `NAME` (one per `layers` entry)
//!
//! Let `n` = product of `shape` (at least one dimension, all positive, no
//! overflow) and `K` = `k`.
//!
//! - `2 <= K <= 256`; `bits` is the smallest of {2, 3, 4, 8} with
//!   `2^bits >= K` (K = 2..4 -> 2, 5..8 -> 3, 9..16 -> 4, 17..256 -> 8).
//! - `NAME.codebook`: F32, shape `[K]`. `codebook[0] == 0.0` exactly (the
//!   pruned component; +0.0 or -0.0), every entry finite. Other entries are
//!   in no particular order and need not be distinct.
//! - `NAME.indices`: U8, shape `[ceil(n*bits/8)]`. The weights in row-major
//!   (PyTorch) order form a little-endian bit stream: weight `i` occupies
//!   stream bits `[i*bits, (i+1)*bits)`, stream bit `j` being bit `j % 8`
//!   (0 = least significant) of byte `j / 8`, and the index's own least
//!   significant bit comes first. So 3-bit indices straddle bytes; 8 weights
//!   always fill exactly `bits` bytes. Padding bits after the last weight in
//!   the last byte are 0. Every index is `< K`.
//! - The hard weight `i` is `codebook[index_i]`.
//!
//! Example (3 bits): indices `1,2,3,4,5,6,7,0` pack to bytes
//! `0xD1 0x58 0x1F`.
//!
//! # Other tensors
//!
//! Every tensor not named `NAME.indices`/`NAME.codebook` of a listed layer
//! is a full-precision tensor under its own (PyTorch) name, e.g.
//! `conv1.weight`, `fc.weight`, `fc.bias`: dtype F32, any shape, every value
//! finite. Names ending in `.indices` or `.codebook` are reserved: such a
//! tensor without a listed layer is an error.
//!
//! Batch norm `BN` (PyTorch module name, e.g. `layer1.0.bn1`) is stored
//! folded as `BN.scale` and `BN.shift`, both F32 `[C]`, applied as
//! `y = x*scale + shift` per channel, where `scale = gamma /
//! sqrt(running_var + eps)` and `shift = beta - running_mean*scale` (see
//! [`fold_batch_norm`]). Any tensor ending in `.scale` must have its
//! `.shift` partner of the same 1-D shape, and vice versa.
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeMap;
//! use dgms_qsimd::format::{FpTensor, ModelMeta, PackedLayer, PackedModel};
//!
//! // K = 5 -> 3-bit indices; one index per weight of a [2, 1, 2, 2] conv.
//! let idx = [0, 1, 2, 3, 4, 0, 1, 2];
//! let conv = PackedLayer::from_indices("layer1.0.conv1", vec![2, 1, 2, 2], &idx, vec![0.0, 0.5, -0.5, 1.0, -1.0])?;
//! assert_eq!((conv.bits, conv.packed.len()), (3, 3));
//! let mut tensors = BTreeMap::new();
//! tensors.insert("fc.bias".to_string(), FpTensor::new(vec![10], vec![0.0; 10])?);
//! let model = PackedModel::new(ModelMeta::new("resnet20", vec![1, 28, 28], 10), vec![conv], tensors)?;
//!
//! let bytes = model.to_bytes()?;
//! let back = PackedModel::from_bytes(&bytes)?;
//! assert_eq!(back.layer("layer1.0.conv1")?.decode()[..3], [0.0, 0.5, -0.5]);
//! assert!(PackedModel::from_bytes(&bytes[..bytes.len() - 1]).is_err());
//! # Ok::<(), dgms_qsimd::QsimdError>(())
//! ```
//!
//! # Versioning
//!
//! A reader must refuse a `format_version` it does not know. Version 1 is
//! this page.

mod bitpack;
mod bn;
mod layer;
mod meta;
mod model;
mod read;
mod write;

pub use bitpack::{
    bits_for_k, pack_indices, packed_len, padding_is_zero, unpack_indices, SUPPORTED_BITS,
};
pub use bn::fold_batch_norm;
pub use layer::{FpTensor, PackedLayer};
pub use meta::{LayerMeta, ModelMeta, FORMAT_NAME, FORMAT_VERSION, METADATA_KEYS};
pub use model::{PackedModel, QUANTIZED_SUFFIXES};
