//! Parsing and validation of `*.dgms.safetensors` bytes.
//!
//! Order of checks: safetensors structure, `__metadata__`, each listed
//! layer (declared shape/K/bits before touching its tensors, so absurd
//! sizes are refused before any allocation), then the remaining tensors,
//! then cross-checks. Every failure is a typed error; nothing here indexes
//! or does arithmetic that untrusted input could make panic.

use std::collections::{BTreeMap, HashSet};

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};

use super::bitpack::{bits_for_k, packed_len};
use super::layer::{in_layer, layer_err, tensor_err, FpTensor, PackedLayer};
use super::meta::{self, quote, LayerMeta};
use super::model::{PackedModel, QUANTIZED_SUFFIXES};
use crate::error::{QsimdError, Result};

/// Size of the little-endian u64 header length that starts the file.
const LEN_PREFIX: usize = 8;

pub(crate) fn from_bytes(bytes: &[u8]) -> Result<PackedModel> {
    // The shared structural check (header, dtypes, offsets tiling the data)
    // first: the safetensors crate would add an unchecked offset to the
    // header length, and every reader of the project checks alike.
    dgms_io::check_safetensors(bytes).map_err(QsimdError::Structure)?;
    let (header_len, md) = SafeTensors::read_metadata(bytes).map_err(QsimdError::Safetensors)?;
    let data = LEN_PREFIX
        .checked_add(header_len)
        .and_then(|start| bytes.get(start..))
        .ok_or_else(|| QsimdError::Header {
            reason: "the header runs past the end of the file".into(),
        })?;
    let (model_meta, layer_metas) = meta::decode(md.metadata().as_ref())?;

    let mut consumed: HashSet<String> = HashSet::new();
    let mut layers = Vec::with_capacity(layer_metas.len());
    let mut names = HashSet::new();
    for lm in &layer_metas {
        if !names.insert(lm.name.as_str()) {
            return Err(layer_err(
                &lm.name,
                "listed more than once in metadata `layers` (layer names must be unique)".into(),
            ));
        }
        let layer = read_layer(lm, &md, data)?;
        consumed.insert(format!("{}.indices", lm.name));
        consumed.insert(format!("{}.codebook", lm.name));
        layers.push(layer);
    }

    let mut tensors = BTreeMap::new();
    for name in md.offset_keys() {
        if consumed.contains(&name) {
            continue;
        }
        if let Some(suffix) = QUANTIZED_SUFFIXES.iter().find(|s| name.ends_with(*s)) {
            let base = name.strip_suffix(suffix).unwrap_or(&name);
            return Err(tensor_err(
                &name,
                format!(
                    "quantized tensor (name ends in {suffix:?}) but no layer {} is listed in metadata `layers`",
                    quote(base)
                ),
            ));
        }
        let info = md
            .info(&name)
            .ok_or_else(|| QsimdError::MissingTensor { name: name.clone() })?;
        let values = f32_values(&name, info, data)?;
        let t = FpTensor {
            shape: info.shape.clone(),
            data: values,
        };
        t.validate(&name)?;
        tensors.insert(name, t);
    }

    let model = PackedModel {
        meta: model_meta,
        layers,
        tensors,
    };
    // Layers and tensors were fully checked above; only cross-checks remain.
    model.validate_structure()?;
    Ok(model)
}

/// Reads one listed layer: checks the declared shape, K and bits first,
/// then dtype and shape of both tensors, then the values.
fn read_layer(lm: &LayerMeta, md: &Metadata, data: &[u8]) -> Result<PackedLayer> {
    let name = &lm.name;
    if name.is_empty() {
        return Err(layer_err(
            name,
            "the layer name in metadata `layers` is empty".into(),
        ));
    }
    let bits = bits_for_k(lm.k).map_err(|e| in_layer(name, e))?;
    if lm.bits != bits {
        return Err(layer_err(
            name,
            format!(
                "metadata says bits = {} but K = {} needs bits = {bits} (smallest of 2, 3, 4, 8 with 2^bits >= K)",
                lm.bits, lm.k
            ),
        ));
    }
    if lm.shape.is_empty() || lm.shape.contains(&0) {
        return Err(layer_err(
            name,
            format!(
                "shape {:?} must have at least one dimension, all positive",
                lm.shape
            ),
        ));
    }
    let overflow = || {
        layer_err(
            name,
            format!("element count of shape {:?} overflows", lm.shape),
        )
    };
    let n = lm
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(overflow)?;
    let want_len = packed_len(n, bits).ok_or_else(overflow)?;

    let idx_name = format!("{name}.indices");
    let cb_name = format!("{name}.codebook");
    let missing = |t: &str| {
        layer_err(
            name,
            format!("tensor {t} is missing (the layer is listed in metadata `layers`)"),
        )
    };
    let idx_info = md.info(&idx_name).ok_or_else(|| missing(&idx_name))?;
    let cb_info = md.info(&cb_name).ok_or_else(|| missing(&cb_name))?;
    if idx_info.dtype != Dtype::U8 {
        return Err(layer_err(
            name,
            format!(
                "tensor {idx_name} has dtype {}, expected U8",
                idx_info.dtype
            ),
        ));
    }
    if idx_info.shape != [want_len] {
        return Err(layer_err(
            name,
            format!(
                "tensor {idx_name} has shape {:?}, expected [{want_len}] = ceil({n} weights * {bits} bits / 8)",
                idx_info.shape
            ),
        ));
    }
    if cb_info.shape != [lm.k] {
        return Err(layer_err(
            name,
            format!(
                "tensor {cb_name} has shape {:?}, expected [{}] (K entries)",
                cb_info.shape, lm.k
            ),
        ));
    }
    let codebook = f32_values(&cb_name, cb_info, data).map_err(|e| in_layer(name, e))?;
    let packed = slice(&idx_name, idx_info, data)?.to_vec();
    PackedLayer::from_packed(name.clone(), lm.shape.clone(), codebook, packed)
}

/// The payload bytes of one tensor (offsets were validated by
/// `check_safetensors`; `get` keeps this panic-free regardless).
fn slice<'d>(name: &str, info: &TensorInfo, data: &'d [u8]) -> Result<&'d [u8]> {
    let (s, e) = info.data_offsets;
    data.get(s..e).ok_or_else(|| {
        tensor_err(
            name,
            format!("data offsets [{s}, {e}) lie outside the data section"),
        )
    })
}

/// Little-endian f32 values of an F32 tensor.
fn f32_values(name: &str, info: &TensorInfo, data: &[u8]) -> Result<Vec<f32>> {
    if info.dtype != Dtype::F32 {
        return Err(tensor_err(
            name,
            format!("has dtype {}, expected F32", info.dtype),
        ));
    }
    let bytes = slice(name, info, data)?;
    let (chunks, rest) = bytes.as_chunks::<4>();
    if !rest.is_empty() {
        return Err(tensor_err(
            name,
            format!(
                "{} data bytes is not a whole number of f32 values",
                bytes.len()
            ),
        ));
    }
    Ok(chunks.iter().map(|c| f32::from_le_bytes(*c)).collect())
}
