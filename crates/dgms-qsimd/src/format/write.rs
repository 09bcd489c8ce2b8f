//! Serialization to safetensors bytes (the file is written by
//! `dgms_io::write_atomic`).
//!
//! The header is built here rather than with `safetensors::serialize`
//! because that function writes `__metadata__` from a `HashMap`, whose order
//! changes from run to run; building it by hand makes the output
//! deterministic. The layout is still plain safetensors (the reader parses
//! it with the `safetensors` crate).

use std::borrow::Cow;

use serde::Serialize;

use super::meta;
use super::model::PackedModel;
use crate::error::{QsimdError, Result};

/// One tensor entry of the header.
#[derive(Serialize)]
struct Info<'a> {
    dtype: &'a str,
    shape: &'a [usize],
    data_offsets: [usize; 2],
}

struct Entry<'a> {
    name: String,
    dtype: &'static str,
    shape: Cow<'a, [usize]>,
    data: Cow<'a, [u8]>,
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn json<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| QsimdError::Header {
        reason: format!("cannot encode {what} as JSON: {e}"),
    })
}

/// Bytes of an already validated model.
pub(crate) fn to_bytes(model: &PackedModel) -> Result<Vec<u8>> {
    let metadata = meta::encode(&model.meta, &model.layer_metas())?;
    // F32 entries first, then U8: with the 8-byte-aligned header every f32
    // payload starts 4-byte aligned in the file (the same order as the
    // `safetensors` crate: alignment descending, then name).
    let mut f32s: Vec<Entry> = Vec::new();
    let mut u8s: Vec<Entry> = Vec::new();
    for l in &model.layers {
        f32s.push(Entry {
            name: format!("{}.codebook", l.name),
            dtype: "F32",
            shape: Cow::Owned(vec![l.codebook.len()]),
            data: Cow::Owned(f32_bytes(&l.codebook)),
        });
        u8s.push(Entry {
            name: format!("{}.indices", l.name),
            dtype: "U8",
            shape: Cow::Owned(vec![l.packed.len()]),
            data: Cow::Borrowed(&l.packed),
        });
    }
    for (name, t) in &model.tensors {
        f32s.push(Entry {
            name: name.clone(),
            dtype: "F32",
            shape: Cow::Borrowed(&t.shape),
            data: Cow::Owned(f32_bytes(&t.data)),
        });
    }
    f32s.sort_by(|a, b| a.name.cmp(&b.name));
    u8s.sort_by(|a, b| a.name.cmp(&b.name));
    let entries: Vec<Entry> = f32s.into_iter().chain(u8s).collect();

    let mut header = String::from("{\"__metadata__\":");
    header.push_str(&json("__metadata__", &metadata)?);
    let mut offset = 0usize;
    for e in &entries {
        let end = offset + e.data.len();
        header.push(',');
        header.push_str(&json("a tensor name", &e.name)?);
        header.push(':');
        let info = Info {
            dtype: e.dtype,
            shape: &e.shape,
            data_offsets: [offset, end],
        };
        header.push_str(&json(&e.name, &info)?);
        offset = end;
    }
    header.push('}');
    // Pad with spaces to a multiple of 8, as the safetensors spec allows.
    while header.len() % 8 != 0 {
        header.push(' ');
    }

    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for e in &entries {
        out.extend_from_slice(&e.data);
    }
    Ok(out)
}
