//! One quantized layer ([`PackedLayer`]) and one full-precision tensor
//! ([`FpTensor`]), with the checks that make them safe to run.

use super::bitpack::{self, packed_len, padding_is_zero, unpack_indices};
use super::meta::LayerMeta;
use crate::error::{QsimdError, Result};

/// Weights unpacked per step when scanning or decoding a layer: a multiple
/// of 8 so every chunk starts on a byte boundary for every width, and small
/// enough to stay on the stack.
const CHUNK: usize = 4096;

/// A hardened DGMS layer: one `bits`-bit index per weight into `codebook`.
///
/// The fields are public so kernels can borrow them; the invariants (see the
/// module docs of [`crate::format`]) hold for values made by
/// [`PackedLayer::from_indices`], [`PackedLayer::from_packed`] or the reader,
/// and [`PackedLayer::validate`] re-checks them after hand edits.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedLayer {
    /// PyTorch module name, e.g. `layer1.0.conv1`.
    pub name: String,
    /// Weight shape in PyTorch order, e.g. `[O, C, kh, kw]`.
    pub shape: Vec<usize>,
    /// Codebook size K.
    pub k: usize,
    /// Index width, `bits_for_k(k)`.
    pub bits: u32,
    /// The K shared values; entry 0 is 0.0 (the pruned component).
    pub codebook: Vec<f32>,
    /// Little-endian bit stream of the indices, `ceil(n*bits/8)` bytes.
    pub packed: Vec<u8>,
}

impl PackedLayer {
    /// Packs one index per weight (row-major) after checking that every
    /// index is `< K` and the codebook is valid.
    pub fn from_indices(
        name: impl Into<String>,
        shape: Vec<usize>,
        indices: &[u8],
        codebook: Vec<f32>,
    ) -> Result<Self> {
        let name = name.into();
        let k = codebook.len();
        let (n, bits) = check_header(&name, &shape, k)?;
        if indices.len() != n {
            return Err(layer_err(
                &name,
                format!(
                    "{} indices given, expected one per weight: {n} for shape {shape:?}",
                    indices.len()
                ),
            ));
        }
        if let Some((weight, &index)) = indices
            .iter()
            .enumerate()
            .find(|&(_, &i)| usize::from(i) >= k)
        {
            return Err(QsimdError::IndexOutOfRange {
                layer: name,
                index,
                weight,
                k,
            });
        }
        check_codebook(&name, &codebook)?;
        let packed = bitpack::pack_indices(indices, bits);
        Ok(Self {
            name,
            shape,
            k,
            bits,
            codebook,
            packed,
        })
    }

    /// Wraps an already packed stream, checking everything
    /// [`PackedLayer::validate`] checks.
    pub fn from_packed(
        name: impl Into<String>,
        shape: Vec<usize>,
        codebook: Vec<f32>,
        packed: Vec<u8>,
    ) -> Result<Self> {
        let k = codebook.len();
        let bits = bitpack::bits_for_k(k).unwrap_or(0);
        let layer = Self {
            name: name.into(),
            shape,
            k,
            bits,
            codebook,
            packed,
        };
        layer.validate()?;
        Ok(layer)
    }

    /// Smallest supported width (2, 3, 4 or 8) with `2^bits >= k`.
    pub fn bits_for_k(k: usize) -> Result<u32> {
        bitpack::bits_for_k(k)
    }

    /// Number of weights, the product of `shape` (saturating, so an invalid
    /// hand-made shape cannot panic here; `validate` rejects it).
    pub fn num_weights(&self) -> usize {
        self.shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
    }

    /// The metadata entry describing this layer.
    pub fn meta(&self) -> LayerMeta {
        LayerMeta {
            name: self.name.clone(),
            shape: self.shape.clone(),
            k: self.k,
            bits: self.bits,
        }
    }

    /// All indices, one byte per weight.
    pub fn indices(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.num_weights()];
        self.unpack_into(&mut out);
        out
    }

    /// Unpacks the indices into `out[..num_weights()]`.
    ///
    /// # Panics
    /// If `out` is shorter than `num_weights()` or the layer is invalid
    /// (packed stream too short, unsupported `bits`).
    pub fn unpack_into(&self, out: &mut [u8]) {
        unpack_indices(&self.packed, self.bits, self.num_weights(), out);
    }

    /// The hard weights `codebook[index]`, row-major.
    ///
    /// An index `>= K` (only possible after hand edits) decodes to NaN
    /// rather than panicking.
    ///
    /// # Panics
    /// If the layer fails [`PackedLayer::validate`] on `bits` or on the
    /// packed length (never for layers from a constructor or the reader).
    pub fn decode(&self) -> Vec<f32> {
        let mut table = [f32::NAN; 256];
        for (t, &c) in table.iter_mut().zip(&self.codebook) {
            *t = c;
        }
        let n = self.num_weights();
        let mut out = Vec::with_capacity(n);
        let mut buf = [0u8; CHUNK];
        self.for_each_chunk(&mut buf, |_, idx| {
            out.extend(idx.iter().map(|&i| table[usize::from(i)]));
        });
        out
    }

    /// Checks every invariant: name, shape, K, bits, codebook values, packed
    /// length, zero padding and every index `< K`.
    pub fn validate(&self) -> Result<()> {
        let (n, bits) = check_header(&self.name, &self.shape, self.k)?;
        if self.bits != bits {
            return Err(layer_err(
                &self.name,
                format!(
                    "bits = {} but K = {} needs bits = {bits} (smallest of 2, 3, 4, 8 with 2^bits >= K)",
                    self.bits, self.k
                ),
            ));
        }
        if self.codebook.len() != self.k {
            return Err(layer_err(
                &self.name,
                format!(
                    "codebook has {} entries, expected K = {}",
                    self.codebook.len(),
                    self.k
                ),
            ));
        }
        check_codebook(&self.name, &self.codebook)?;
        let want = packed_len(n, bits).ok_or_else(|| overflow(&self.name, &self.shape))?;
        if self.packed.len() != want {
            return Err(layer_err(
                &self.name,
                format!(
                    "indices hold {} bytes, expected ceil({n} weights * {bits} bits / 8) = {want}",
                    self.packed.len()
                ),
            ));
        }
        if !padding_is_zero(&self.packed, bits, n) {
            return Err(layer_err(
                &self.name,
                format!(
                    "nonzero padding bits after weight {} in the last indices byte",
                    n - 1
                ),
            ));
        }
        // With K = 2^bits every bit pattern is a valid index.
        if self.k < 1 << bits {
            let mut buf = [0u8; CHUNK];
            let mut bad = None;
            self.for_each_chunk(&mut buf, |start, idx| {
                if bad.is_none() {
                    if let Some((j, &i)) = idx
                        .iter()
                        .enumerate()
                        .find(|&(_, &i)| usize::from(i) >= self.k)
                    {
                        bad = Some((start + j, i));
                    }
                }
            });
            if let Some((weight, index)) = bad {
                return Err(QsimdError::IndexOutOfRange {
                    layer: self.name.clone(),
                    index,
                    weight,
                    k: self.k,
                });
            }
        }
        Ok(())
    }

    /// Calls `f(first_weight, indices)` for consecutive chunks of at most
    /// `CHUNK` unpacked indices, without allocating the whole index array.
    fn for_each_chunk(&self, buf: &mut [u8; CHUNK], mut f: impl FnMut(usize, &[u8])) {
        let n = self.num_weights();
        let bytes_per_chunk = CHUNK / 8 * self.bits as usize;
        let mut start = 0;
        for bytes in self.packed.chunks(bytes_per_chunk.max(1)) {
            let len = CHUNK.min(n - start);
            unpack_indices(bytes, self.bits, len, buf);
            f(start, &buf[..len]);
            start += len;
            if start == n {
                break;
            }
        }
    }
}

/// A full-precision tensor (first conv, classifier, batch-norm scale/shift).
#[derive(Debug, Clone, PartialEq)]
pub struct FpTensor {
    /// Shape in PyTorch order; `[]` is a scalar.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl FpTensor {
    /// Builds a tensor after checking that `data` fills `shape` and is finite.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let t = Self { shape, data };
        t.validate("(new tensor)")?;
        Ok(t)
    }

    /// Checks shape/length agreement and finiteness; `name` is for messages.
    pub fn validate(&self, name: &str) -> Result<()> {
        let n = self
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| {
                tensor_err(
                    name,
                    format!("element count of shape {:?} overflows", self.shape),
                )
            })?;
        if self.data.len() != n {
            return Err(tensor_err(
                name,
                format!(
                    "{} values for shape {:?}, expected {n}",
                    self.data.len(),
                    self.shape
                ),
            ));
        }
        if let Some((i, v)) = self.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(tensor_err(
                name,
                format!("value {v} at element {i} is not finite"),
            ));
        }
        Ok(())
    }
}

/// Checks name, shape and K; returns (number of weights, bits).
fn check_header(name: &str, shape: &[usize], k: usize) -> Result<(usize, u32)> {
    if name.is_empty() {
        return Err(layer_err(name, "the layer name is empty".into()));
    }
    if shape.is_empty() {
        return Err(layer_err(
            name,
            "shape [] has no dimensions, expected at least 1".into(),
        ));
    }
    if shape.contains(&0) {
        return Err(layer_err(
            name,
            format!("shape {shape:?} has a zero dimension"),
        ));
    }
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| overflow(name, shape))?;
    let bits = bitpack::bits_for_k(k).map_err(|e| in_layer(name, e))?;
    packed_len(n, bits).ok_or_else(|| overflow(name, shape))?;
    Ok((n, bits))
}

/// Codebook rules: entry 0 is exactly 0.0, every entry is finite.
fn check_codebook(name: &str, codebook: &[f32]) -> Result<()> {
    match codebook.first() {
        Some(&0.0) => {}
        Some(&c) => {
            return Err(layer_err(
                name,
                format!("codebook[0] = {c}, expected exactly 0.0 (the pruned component)"),
            ))
        }
        None => return Err(layer_err(name, "the codebook is empty".into())),
    }
    if let Some((i, c)) = codebook.iter().enumerate().find(|(_, c)| !c.is_finite()) {
        return Err(layer_err(
            name,
            format!("codebook[{i}] = {c} is not finite"),
        ));
    }
    Ok(())
}

fn overflow(name: &str, shape: &[usize]) -> QsimdError {
    layer_err(name, format!("element count of shape {shape:?} overflows"))
}

pub(crate) fn layer_err(name: &str, reason: String) -> QsimdError {
    QsimdError::Layer {
        layer: name.to_string(),
        reason,
    }
}

/// The error `source` of layer `name`, kept as the cause.
pub(crate) fn in_layer(name: &str, source: QsimdError) -> QsimdError {
    QsimdError::InLayer {
        layer: name.to_string(),
        source: Box::new(source),
    }
}

pub(crate) fn tensor_err(name: &str, reason: String) -> QsimdError {
    QsimdError::Tensor {
        tensor: name.to_string(),
        reason,
    }
}
