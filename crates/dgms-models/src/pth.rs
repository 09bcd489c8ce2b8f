//! Reading PyTorch `.pth` state dicts: the zip + pickle format of
//! `torch.save`, in which torchvision distributes its pretrained weights.
//!
//! The pickle is parsed by `candle_core::pickle`; this module adds what a
//! loader of untrusted files needs on top of it:
//!
//! - every failure is a [`ModelError::Checkpoint`] (or, for a file the
//!   pre-scan refuses, [`ModelError::PthRefused`]) naming the file;
//! - before candle parses anything, [`crate::pth_scan::scan`] checks the zip
//!   entries (stored, inside the file) and walks every pickle with bounded
//!   stack, nesting, memo and allocation, so a hostile pickle cannot
//!   overflow the stack, exhaust memory or hang candle's reader;
//! - each tensor's extent is checked against the size of the zip entry
//!   holding its storage before it is read, so a corrupt shape cannot ask
//!   for an absurd allocation;
//! - the tensors read take at most [`MAX_SHARING`] times the file's
//!   length, though several may share one storage;
//! - candle reopens the zip for every tensor, so the number of tensors
//!   times the number of entries is bounded ([`MAX_TENSOR_LOOKUPS`]);
//! - the pickle reader indexes into argument lists it has not checked, so
//!   a malformed pickle can make it panic: calls into it run under
//!   `catch_unwind` and a panic becomes an error (the panic hook still
//!   prints its message);
//! - `num_batches_tracked` entries are skipped, as the safetensors path
//!   ignores them (the models do not hold them).
//!
//! A bare state dict is read from the top level of the pickle; a training
//! checkpoint that nests it under `state_dict` or `model` is read from there.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use candle_core::pickle::{PthTensors, TensorInfo};
use candle_core::Tensor;

use crate::error::{ModelError, Result};

/// Most tensors x zip entries: candle parses the zip's directory again
/// for every tensor it reads (ResNet-50 with optimizer state: ~5e5).
pub const MAX_TENSOR_LOOKUPS: u64 = 1 << 24;

/// Most bytes of tensors read, as a multiple of the file's length:
/// torch.save stores each storage once, and state dicts rarely hold views
/// sharing one (tied weights), so this is generous.
pub const MAX_SHARING: u64 = 4;

/// Keys under which training checkpoints commonly nest the state dict,
/// tried in order when the top level holds no tensors.
const NESTED_KEYS: [&str; 2] = ["state_dict", "model"];

/// Whether a state-dict entry is a batch norm's `num_batches_tracked`.
fn is_batches_tracked(name: &str) -> bool {
    name.rsplit('.').next() == Some("num_batches_tracked")
}

/// Runs `f`, turning a panic inside candle's pickle reader into an error.
fn guarded<T>(f: impl FnOnce() -> candle_core::Result<T>) -> candle_core::Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(candle_core::Error::Msg(
            "malformed pickle data (the reader panicked)".into(),
        ))
    })
}

/// Opens the state dict: the top level, else the first nested key that
/// holds tensors.
fn open(path: &Path) -> candle_core::Result<PthTensors> {
    let top = guarded(|| PthTensors::new(path, None))?;
    if !top.tensor_infos().is_empty() {
        return Ok(top);
    }
    for key in NESTED_KEYS {
        // A missing key is an error in candle; it only means "not this one".
        if let Ok(nested) = guarded(|| PthTensors::new(path, Some(key))) {
            if !nested.tensor_infos().is_empty() {
                return Ok(nested);
            }
        }
    }
    Ok(top)
}

/// Checks that the tensor `info` describes fits in the zip entry holding
/// its storage (`entries`: sizes by entry name; see the module docs).
/// Returns the bytes the tensor takes.
fn check_extent(info: &TensorInfo, entries: &HashMap<String, u64>) -> candle_core::Result<u64> {
    let Some(&entry_len) = entries.get(&info.path) else {
        return Err(candle_core::Error::Msg(format!(
            "tensor `{}`: its storage `{}` is not in the archive",
            info.name, info.path
        )));
    };
    let elems = info
        .layout
        .dims()
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let bytes = elems.and_then(|n| n.checked_mul(info.dtype.size_in_bytes()));
    let end = bytes.and_then(|n| n.checked_add(info.layout.start_offset()));
    match (bytes, end) {
        (Some(b), Some(e)) if (e as u64) <= entry_len => Ok(b as u64),
        _ => Err(candle_core::Error::Msg(format!(
            "tensor `{}`: shape {:?} ({:?}) does not fit in its storage `{}` ({entry_len} bytes)",
            info.name,
            info.layout.dims(),
            info.dtype,
            info.path
        ))),
    }
}

/// Reads every tensor of the state dict in the `.pth` file at `path`, by
/// name, in the dtype stored (f32 for torchvision's weights), except
/// `num_batches_tracked`. Errors if the file cannot be read or parsed, or
/// holds no tensors.
pub fn read_pth(path: impl AsRef<Path>) -> Result<HashMap<String, Tensor>> {
    let path = path.as_ref();
    let fail = |source| ModelError::Checkpoint {
        path: path.display().to_string(),
        source,
    };
    let file_len = std::fs::metadata(path).map_err(|e| fail(e.into()))?.len();
    let entries =
        crate::pth_scan::scan(path, file_len).map_err(|source| ModelError::PthRefused {
            path: path.display().to_string(),
            source,
        })?;
    let pth = open(path).map_err(fail)?;
    let lookups = (pth.tensor_infos().len() as u64).saturating_mul(entries.len() as u64);
    if lookups > MAX_TENSOR_LOOKUPS {
        return Err(fail(candle_core::Error::Msg(format!(
            "{} tensors in {} zip entries: more than {MAX_TENSOR_LOOKUPS} lookups",
            pth.tensor_infos().len(),
            entries.len()
        ))));
    }
    let mut names: Vec<&String> = pth
        .tensor_infos()
        .keys()
        .filter(|n| !is_batches_tracked(n))
        .collect();
    // Sorted, so which error a file with several bad tensors gives is fixed.
    names.sort();
    if names.is_empty() {
        return Err(fail(candle_core::Error::Msg(
            "no tensors found: not a PyTorch state dict".into(),
        )));
    }
    // Every extent before any read: tensors sharing one storage could
    // otherwise make a small file read its largest storage many times.
    let mut total = 0u64;
    for name in &names {
        total =
            total.saturating_add(check_extent(&pth.tensor_infos()[*name], &entries).map_err(fail)?);
    }
    let bound = file_len.saturating_mul(MAX_SHARING);
    if total > bound {
        return Err(fail(candle_core::Error::Msg(format!(
            "its tensors take {total} bytes, more than {MAX_SHARING} x the file's {file_len} \
             (tensors sharing storages)"
        ))));
    }
    let mut tensors = HashMap::with_capacity(names.len());
    for name in names {
        let tensor = guarded(|| pth.get(name))
            .map_err(|e| fail(e.context(format!("tensor `{name}`"))))?
            .ok_or_else(|| fail(candle_core::Error::Msg(format!("tensor `{name}` vanished"))))?;
        tensors.insert(name.clone(), tensor);
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::is_batches_tracked;

    #[test]
    fn batches_tracked_names() {
        assert!(is_batches_tracked("bn1.num_batches_tracked"));
        assert!(is_batches_tracked("num_batches_tracked"));
        assert!(!is_batches_tracked("bn1.running_var"));
        assert!(!is_batches_tracked("my_num_batches_tracked"));
    }
}
