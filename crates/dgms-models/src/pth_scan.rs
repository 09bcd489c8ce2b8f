//! A bounded pre-scan of a `.pth` file (the zip + pickle of `torch.save`),
//! run before candle's pickle reader sees it.
//!
//! candle's reader builds a tree of objects with recursion (clone, drop,
//! debug printing), allocates a declared string length before reading it,
//! copies a memo entry on every get, and reads the zip's entries at the
//! sizes they declare. A hostile file could thus overflow the stack,
//! exhaust memory or spin for a long time. This walker goes over every
//! pickle opcode of protocols 0-5 knowing each one's argument length, and
//! simulates the stack with one small record per object (its nesting depth
//! and the bytes a copy of it would take), so it can refuse such a file in
//! time linear in its size, before anything large is allocated.
//!
//! The limits are far above what `torch.save` writes for a state dict or a
//! training checkpoint (nested dicts, optimizer state, lists of floats):
//! those nest about ten deep and their pickles are kilobytes.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use zip::CompressionMethod;

mod walker;

pub use walker::scan_pickle;

/// Most entries a `.pth` zip may hold (one per storage, plus a few).
pub const MAX_ZIP_ENTRIES: usize = 16_384;
/// Largest pickle entry (`data.pkl`) read.
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Most opcodes in one pickle.
pub const MAX_OPCODES: u64 = 16_000_000;
/// Most objects on the pickle stack at once.
pub const MAX_STACK: usize = 100_000;
/// Most marks on the pickle stack at once.
pub const MAX_MARKS: usize = 1_000;
/// Deepest nesting of objects (candle recurses over it).
pub const MAX_NESTING: u32 = 200;
/// Most memo entries.
pub const MAX_MEMO: usize = 1 << 20;
/// Most bytes the reader may allocate for objects, memo copies included.
pub const MAX_OBJECT_BYTES: u64 = 256 << 20;
/// Bytes counted per object (the size of candle's `Object` and its box).
pub(crate) const OBJECT_BYTES: u64 = 64;

/// Why a `.pth` file was refused before parsing.
#[derive(Debug, thiserror::Error)]
pub enum PthScanError {
    /// The zip archive cannot be opened or an entry cannot be read.
    #[error("zip archive: {0}")]
    Zip(String),
    /// A zip entry is unusable (compressed, or sizes past the file's end).
    #[error("zip entry `{entry}`: {what}")]
    Entry { entry: String, what: String },
    /// A pickle exceeds one of this module's limits.
    #[error("pickle `{entry}` at byte {offset}: {what} ({found} > limit {limit})")]
    Limit {
        entry: String,
        offset: u64,
        what: &'static str,
        found: u64,
        limit: u64,
    },
    /// A pickle is malformed (truncated, unknown opcode, stack underflow).
    #[error("pickle `{entry}` at byte {offset}: {what}")]
    Malformed {
        entry: String,
        offset: u64,
        what: String,
    },
}

/// Checks the zip entries and every `*data.pkl` pickle of the `.pth` file at
/// `path` (of `file_len` bytes). Returns each entry's size by name, which
/// bounds the tensors stored in it.
pub fn scan(path: &Path, file_len: u64) -> Result<HashMap<String, u64>, PthScanError> {
    let zip_err = |e: &dyn std::fmt::Display| PthScanError::Zip(e.to_string());
    let mut zip = crate::pth::open_archive(path).map_err(|e| zip_err(&e))?;
    if zip.len() > MAX_ZIP_ENTRIES {
        return Err(PthScanError::Zip(format!(
            "{} entries, more than the limit of {MAX_ZIP_ENTRIES}",
            zip.len()
        )));
    }
    let mut sizes = HashMap::with_capacity(zip.len());
    let mut pickles = Vec::new();
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i).map_err(|e| zip_err(&e))?;
        let name = entry.name().map_err(|e| zip_err(&e))?.into_owned();
        let bad = |what: String| PthScanError::Entry {
            entry: name.clone(),
            what,
        };
        if entry.compression() != CompressionMethod::Stored {
            // torch.save stores every entry; candle's zip has no decompressor.
            return Err(bad(format!(
                "compressed ({}); torch.save stores entries uncompressed",
                entry.compression()
            )));
        }
        let size = entry.size();
        if size != entry.compressed_size() {
            return Err(bad(format!(
                "stored entry declares {size} bytes but holds {}",
                entry.compressed_size()
            )));
        }
        let start = entry.data_start().unwrap_or(u64::MAX);
        if start.checked_add(size).is_none_or(|end| end > file_len) {
            return Err(bad(format!(
                "declares {size} bytes from byte {start}, past the end of the {file_len}-byte file"
            )));
        }
        if name.ends_with("data.pkl") {
            if size > MAX_PICKLE_BYTES {
                return Err(PthScanError::Limit {
                    entry: name,
                    offset: 0,
                    what: "pickle size in bytes",
                    found: size,
                    limit: MAX_PICKLE_BYTES,
                });
            }
            pickles.push(i);
        }
        sizes.insert(name, size);
    }
    for i in pickles {
        let entry = zip.by_index(i).map_err(|e| zip_err(&e))?;
        let name = entry.name().map_err(|e| zip_err(&e))?.into_owned();
        let mut bytes = Vec::new();
        // The size was checked above; `take` keeps a lying reader bounded.
        entry
            .take(MAX_PICKLE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| zip_err(&e))?;
        scan_pickle(&name, &bytes)?;
    }
    Ok(sizes)
}
