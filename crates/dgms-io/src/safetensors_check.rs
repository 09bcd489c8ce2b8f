//! The one structural check of safetensors bytes, run by every reader
//! (checkpoints, `--init` weights, `infer --input`, packed models) before
//! the bytes reach candle or the `safetensors` crate, in debug and release
//! builds alike.
//!
//! Layout: an 8-byte little-endian header length `n`, `n` bytes of JSON
//! (`{"name": {"dtype", "shape", "data_offsets": [start, end]}, ...,
//! "__metadata__": {string: string}}`), then the data section, which the
//! tensors' offsets (relative to its start) must tile exactly: ordered,
//! without gaps or overlaps, each as long as its shape and dtype imply,
//! together covering it to the last byte. All arithmetic is checked, so no
//! header can make a reader allocate, index or add beyond the file.
//!
//! Errors name the tensor and the problem; the caller adds the file.

use std::collections::{BTreeMap, HashSet};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// Size of the header-length prefix.
pub const LEN_PREFIX: u64 = 8;
/// Largest header accepted (the `safetensors` crate's own bound).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Header key of the free-form string metadata.
pub const METADATA_KEY: &str = "__metadata__";

/// What is wrong with a safetensors file's structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafetensorsCheckError {
    /// Fewer than 8 bytes: no header length.
    #[error("{len} bytes is too short for a safetensors file (the header length alone is 8)")]
    TooShort { len: u64 },
    /// The header length is over [`MAX_HEADER_BYTES`] or past the file's end.
    #[error("header length {header} {problem}")]
    HeaderLength { header: u64, problem: String },
    /// The header is not JSON of the safetensors shape.
    #[error("header is not a safetensors header: {problem}")]
    Header { problem: String },
    /// One tensor's entry is wrong.
    #[error("tensor `{name}`: {problem}")]
    Tensor { name: String, problem: String },
    /// The tensors do not cover the data section (trailing bytes).
    #[error("data section of {data_len} bytes: {problem}")]
    Data { data_len: u64, problem: String },
}

/// One tensor as the header declares it, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    /// The dtype's name as written (e.g. `F32`).
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Byte range in the data section.
    pub start: u64,
    pub end: u64,
}

/// A checked header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsLayout {
    /// Header length (the 8-byte prefix not included).
    pub header_len: u64,
    /// Offset of the data section in the file.
    pub data_start: u64,
    /// Tensors in data-section order.
    pub tensors: Vec<TensorEntry>,
    /// The `__metadata__` map, if any.
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Bits per element of a safetensors dtype name, `None` if unknown.
pub fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" | "F8_E4M3FNUZ"
        | "F8_E5M2FNUZ" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Checks the structure of the safetensors file `bytes` (see the module
/// docs) and returns its layout.
pub fn check_safetensors(bytes: &[u8]) -> Result<SafetensorsLayout, SafetensorsCheckError> {
    let len = bytes.len() as u64;
    let prefix: [u8; 8] = bytes
        .get(..8)
        .and_then(|p| p.try_into().ok())
        .ok_or(SafetensorsCheckError::TooShort { len })?;
    let header_len = u64::from_le_bytes(prefix);
    let header_err = |problem: String| SafetensorsCheckError::HeaderLength {
        header: header_len,
        problem,
    };
    if header_len > MAX_HEADER_BYTES {
        return Err(header_err(format!(
            "exceeds the limit of {MAX_HEADER_BYTES} bytes"
        )));
    }
    let data_start = LEN_PREFIX + header_len; // both bounded: no overflow
    if data_start > len {
        return Err(header_err(format!(
            "runs past the end of the {len}-byte file"
        )));
    }
    let header = &bytes[LEN_PREFIX as usize..data_start as usize];
    let (entries, metadata) = parse_header(header)?;
    let data_len = len - data_start;
    let tensors = check_offsets(entries, data_len)?;
    Ok(SafetensorsLayout {
        header_len,
        data_start,
        tensors,
        metadata,
    })
}

type Entries = Vec<(String, Value)>;

/// The header's entries in file order (duplicates kept, so they can be
/// refused) and its metadata.
fn parse_header(
    header: &[u8],
) -> Result<(Entries, Option<BTreeMap<String, String>>), SafetensorsCheckError> {
    let bad = |problem: String| SafetensorsCheckError::Header { problem };
    if header.first() != Some(&b'{') {
        return Err(bad("it does not start with `{`".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(header);
    let RawEntries(entries) = de
        .deserialize_map(RawEntriesVisitor)
        .map_err(|e| bad(e.to_string()))?;
    // Only trailing spaces may follow (writers pad the header with them).
    de.end().map_err(|e| bad(e.to_string()))?;
    let mut metadata = None;
    let mut tensors = Vec::with_capacity(entries.len());
    let mut seen = HashSet::with_capacity(entries.len());
    for (name, value) in entries {
        if !seen.insert(name.clone()) {
            return Err(bad(format!("key `{name}` appears more than once")));
        }
        if name == METADATA_KEY {
            let map: BTreeMap<String, String> = serde_json::from_value(value)
                .map_err(|e| bad(format!("`{METADATA_KEY}` is not a string map: {e}")))?;
            metadata = Some(map);
        } else {
            tensors.push((name, value));
        }
    }
    Ok((tensors, metadata))
}

/// Checks each tensor's entry and that the offsets tile the data section.
fn check_offsets(
    entries: Entries,
    data_len: u64,
) -> Result<Vec<TensorEntry>, SafetensorsCheckError> {
    let mut tensors = entries
        .into_iter()
        .map(|(name, value)| tensor_entry(name, &value))
        .collect::<Result<Vec<_>, _>>()?;
    tensors.sort_by_key(|t| (t.start, t.end));
    let mut next = 0u64;
    for t in &tensors {
        let err = |problem: String| SafetensorsCheckError::Tensor {
            name: t.name.clone(),
            problem,
        };
        if t.start < next {
            return Err(err(format!(
                "data offsets [{}, {}) overlap the previous tensor (which ends at {next})",
                t.start, t.end
            )));
        }
        if t.start > next {
            return Err(err(format!(
                "data offsets [{}, {}) leave a gap after byte {next}",
                t.start, t.end
            )));
        }
        if t.end > data_len {
            return Err(err(format!(
                "data offsets [{}, {}) run past the end of the {data_len}-byte data section \
                 (the file is truncated or corrupt)",
                t.start, t.end
            )));
        }
        next = t.end;
    }
    if next != data_len {
        return Err(SafetensorsCheckError::Data {
            data_len,
            problem: format!(
                "the tensors cover {next} bytes: {} trailing bytes",
                data_len - next
            ),
        });
    }
    Ok(tensors)
}

/// One tensor's entry: known dtype, extent of shape x dtype equal to its
/// offsets' extent.
fn tensor_entry(name: String, value: &Value) -> Result<TensorEntry, SafetensorsCheckError> {
    let err = |problem: String| SafetensorsCheckError::Tensor {
        name: name.clone(),
        problem,
    };
    let obj = value
        .as_object()
        .ok_or_else(|| err("the entry is not an object".into()))?;
    let dtype = obj
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| err("`dtype` is missing or not a string".into()))?;
    let bits = dtype_bits(dtype).ok_or_else(|| err(format!("unknown dtype `{dtype}`")))?;
    let numbers = |key: &str| -> Result<Vec<u64>, SafetensorsCheckError> {
        obj.get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
            .ok_or_else(|| {
                err(format!(
                    "`{key}` is missing or not a list of unsigned integers"
                ))
            })
    };
    let shape = numbers("shape")?;
    let offsets = numbers("data_offsets")?;
    let [start, end] = offsets[..] else {
        return Err(err(format!(
            "`data_offsets` has {} entries, expected 2",
            offsets.len()
        )));
    };
    if end < start {
        return Err(err(format!(
            "data offsets [{start}, {end}) end before they start"
        )));
    }
    let bytes = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(bits))
        .ok_or_else(|| err(format!("shape {shape:?} x {dtype} overflows")))?;
    if bytes % 8 != 0 {
        return Err(err(format!(
            "shape {shape:?} x {dtype} is not a whole number of bytes"
        )));
    }
    let bytes = bytes / 8;
    if end - start != bytes {
        return Err(err(format!(
            "shape {shape:?} x {dtype} is {bytes} bytes but data offsets [{start}, {end}) hold {}",
            end - start
        )));
    }
    Ok(TensorEntry {
        name,
        dtype: dtype.to_string(),
        shape,
        start,
        end,
    })
}

/// Every header entry in order, duplicates included (a map would collapse
/// them).
struct RawEntries(Entries);

struct RawEntriesVisitor;

impl<'de> Visitor<'de> for RawEntriesVisitor {
    type Value = RawEntries;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntries, A::Error> {
        let mut out = Vec::new();
        while let Some(entry) = map.next_entry::<String, Value>()? {
            out.push(entry);
        }
        Ok(RawEntries(out))
    }
}

#[cfg(test)]
#[path = "safetensors_check_tests.rs"]
mod tests;
