//! Serialization to safetensors bytes and the atomic file write.
//!
//! The header is built here rather than with `safetensors::serialize`
//! because that function writes `__metadata__` from a `HashMap`, whose order
//! changes from run to run; building it by hand makes the output
//! deterministic. The layout is still plain safetensors (the reader parses
//! it with the `safetensors` crate).

use std::borrow::Cow;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Distinguishes temporary files of concurrent writes within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to a temporary sibling of `path`, syncs it and renames it
/// over `path`; on any failure the temporary file is removed and `path` is
/// left as it was.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source: std::io::Error| QsimdError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path.file_name().ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path has no file name",
        ))
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // Best effort: the temp file may not exist if `open` failed.
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    // Persist the rename itself; not all platforms can sync a directory,
    // and the data is already safe, so a failure here is not an error.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
