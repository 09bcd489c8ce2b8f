//! Reading PyTorch `.pth` state dicts: the zip + pickle format of
//! `torch.save`, in which torchvision distributes its pretrained weights
//! and the DGMS authors their checkpoints.
//!
//! The pickle is parsed by `candle_core::pickle`'s `Stack`; the archive and
//! the tensors are read here, because a loader of untrusted files needs
//! more than candle's `PthTensors` gives:
//!
//! - every failure is a [`ModelError::Checkpoint`] (or, for a file the
//!   pre-scan refuses, [`ModelError::PthRefused`]) naming the file;
//! - before any pickle is parsed, [`crate::pth_scan::scan`] checks the zip
//!   entries (stored, inside the file) and walks every pickle with bounded
//!   stack, nesting, memo and allocation, so a hostile pickle cannot
//!   overflow the stack, exhaust memory or hang candle's parser;
//! - the archive is opened once, at offset 0 ([`open_archive`]): the zip
//!   crate's detection of prepended data misreads some genuine `torch.save`
//!   archives (the DGMS authors' checkpoints among them) and refuses them,
//!   and `torch.save` never prepends anything;
//! - each tensor's extent is checked against the size of the zip entry
//!   holding its storage before it is read, so a corrupt shape cannot ask
//!   for an absurd allocation;
//! - the tensors read take at most [`MAX_SHARING`] times the file's
//!   length, though several may share one storage;
//! - the pickle parser indexes into argument lists it has not checked, so
//!   a malformed pickle can make it panic: calls into it run under
//!   `catch_unwind` and a panic becomes an error (the panic hook still
//!   prints its message);
//! - `num_batches_tracked` entries are skipped, as the safetensors path
//!   ignores them (the models do not hold them).
//!
//! A bare state dict is read from the top level of the pickle; a training
//! checkpoint that nests it under `state_dict` or `model` is read from there.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{Device, Tensor};
use zip::read::{ArchiveOffset, Config};
use zip::ZipArchive;

use crate::error::{ModelError, Result};

/// Most bytes of tensors read, as a multiple of the file's length:
/// torch.save stores each storage once, and state dicts rarely hold views
/// sharing one (tied weights), so this is generous.
pub const MAX_SHARING: u64 = 4;

/// Keys under which training checkpoints commonly nest the state dict,
/// tried in order when the top level holds no tensors.
const NESTED_KEYS: [&str; 2] = ["state_dict", "model"];

/// The first bytes of a zip archive (a local file header), which every
/// `torch.save` file since PyTorch 1.6 starts with.
pub const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";

/// Whether the file at `path` starts like a zip archive, i.e. like a
/// PyTorch file. False when it cannot be read.
pub fn starts_like_zip(path: &Path) -> bool {
    let mut head = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == ZIP_MAGIC)
}

/// Opens the zip archive of a `.pth` file, its data starting at byte 0.
pub fn open_archive(path: &Path) -> zip::result::ZipResult<ZipArchive<BufReader<File>>> {
    let config = Config {
        archive_offset: ArchiveOffset::Known(0),
    };
    ZipArchive::with_config(config, BufReader::new(File::open(path)?))
}

/// Whether a state-dict entry is a batch norm's `num_batches_tracked`.
fn is_batches_tracked(name: &str) -> bool {
    name.rsplit('.').next() == Some("num_batches_tracked")
}

/// Runs `f`, turning a panic inside candle's pickle parser into an error.
fn guarded<T>(f: impl FnOnce() -> candle_core::Result<T>) -> candle_core::Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(candle_core::Error::Msg(
            "malformed pickle data (the parser panicked)".into(),
        ))
    })
}

fn msg(text: String) -> candle_core::Error {
    candle_core::Error::Msg(text)
}

/// The object a `data.pkl` pickle holds; a scripted module's state is
/// unwrapped to its attributes, as candle does.
fn parse_pickle(bytes: &[u8]) -> candle_core::Result<Object> {
    let obj = guarded(|| {
        let mut stack = Stack::empty();
        stack.read_loop(&mut &bytes[..])?;
        stack.finalize()
    })?;
    Ok(match obj {
        Object::Build { callable, args } => match *callable {
            Object::Reduce { callable, .. }
                if matches!(&*callable, Object::Class { module_name, class_name }
                    if module_name == "__torch__" && class_name == "Module") =>
            {
                *args
            }
            callable => Object::Build {
                callable: Box::new(callable),
                args,
            },
        },
        obj => obj,
    })
}

/// The tensors directly held by a dict object (its other values are
/// skipped: epochs, accuracies, nested dicts).
fn dict_tensors(obj: &Object, dir: &Path) -> candle_core::Result<Vec<TensorInfo>> {
    let Object::Dict(entries) = obj else {
        return Ok(Vec::new());
    };
    let mut infos = Vec::new();
    for (name, value) in entries {
        let label = match name {
            Object::Unicode(s) => s.clone(),
            _ => continue,
        };
        let info = guarded(|| value.clone().into_tensor_info(name.clone(), dir))
            .map_err(|e| e.context(format!("tensor `{label}`")))?;
        infos.extend(info);
    }
    Ok(infos)
}

/// The value of `key` in a dict object.
fn dict_get<'a>(obj: &'a Object, key: &str) -> Option<&'a Object> {
    match obj {
        Object::Dict(entries) => entries
            .iter()
            .find(|(k, _)| matches!(k, Object::Unicode(s) if s == key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// The state dict's tensor descriptions: those of the top level of every
/// `data.pkl`, else of the first nested key holding tensors.
fn tensor_infos(zip: &mut ZipArchive<BufReader<File>>) -> candle_core::Result<Vec<TensorInfo>> {
    let mut pickles = Vec::new();
    for name in zip.file_names() {
        let name = name.map_err(|e| msg(format!("zip entry name: {e}")))?;
        if name.ends_with("data.pkl") {
            pickles.push(name.into_owned());
        }
    }
    let mut objects = Vec::with_capacity(pickles.len());
    for name in pickles {
        let mut bytes = Vec::new();
        zip.by_name(&name)
            .map_err(|e| msg(format!("zip entry `{name}`: {e}")))?
            .read_to_end(&mut bytes)?;
        let dir = PathBuf::from(name.strip_suffix(".pkl").unwrap_or(&name));
        objects.push((dir, parse_pickle(&bytes)?));
    }
    let mut top = Vec::new();
    for (dir, obj) in &objects {
        top.extend(dict_tensors(obj, dir)?);
    }
    if !top.is_empty() {
        return Ok(top);
    }
    for key in NESTED_KEYS {
        let mut nested = Vec::new();
        for (dir, obj) in &objects {
            if let Some(inner) = dict_get(obj, key) {
                nested.extend(dict_tensors(inner, dir)?);
            }
        }
        if !nested.is_empty() {
            return Ok(nested);
        }
    }
    Ok(top)
}

/// Checks that the tensor `info` describes fits in the zip entry holding
/// its storage (`entries`: sizes by entry name; see the module docs).
/// Returns the bytes the tensor takes.
fn check_extent(info: &TensorInfo, entries: &HashMap<String, u64>) -> candle_core::Result<u64> {
    let Some(&entry_len) = entries.get(&info.path) else {
        return Err(msg(format!(
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
        _ => Err(msg(format!(
            "tensor `{}`: shape {:?} ({:?}) does not fit in its storage `{}` ({entry_len} bytes)",
            info.name,
            info.layout.dims(),
            info.dtype,
            info.path
        ))),
    }
}

/// Reads one tensor from its storage entry: contiguous, or Fortran-ordered
/// (as some exporters write), else an error.
fn read_tensor(
    zip: &mut ZipArchive<BufReader<File>>,
    info: &TensorInfo,
) -> candle_core::Result<Tensor> {
    let layout = &info.layout;
    let fortran = layout.is_fortran_contiguous();
    if !layout.is_contiguous() && !fortran {
        return Err(msg(format!("non-contiguous layout {layout:?}")));
    }
    let mut entry = zip
        .by_name(&info.path)
        .map_err(|e| msg(format!("storage `{}`: {e}", info.path)))?;
    std::io::copy(
        &mut entry.by_ref().take(layout.start_offset() as u64),
        &mut std::io::sink(),
    )?;
    // The extent was checked against the entry's size before any read.
    let len = layout.shape().elem_count() * info.dtype.size_in_bytes();
    let mut bytes = Vec::with_capacity(len);
    entry.take(len as u64).read_to_end(&mut bytes)?;
    if bytes.len() != len {
        return Err(msg(format!(
            "storage `{}` ends after {} of {len} bytes",
            info.path,
            bytes.len()
        )));
    }
    let rank = layout.shape().rank();
    if rank > 1 && fortran && !layout.is_contiguous() {
        let reversed: Vec<usize> = layout.dims().iter().rev().copied().collect();
        let t = Tensor::from_raw_buffer(&bytes, info.dtype, &reversed, &Device::Cpu)?;
        let perm: Vec<usize> = (0..rank).rev().collect();
        return t.permute(perm)?.contiguous();
    }
    Tensor::from_raw_buffer(&bytes, info.dtype, layout.dims(), &Device::Cpu)
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
    let mut zip = open_archive(path).map_err(|e| fail(msg(format!("zip archive: {e}"))))?;
    let mut infos: Vec<TensorInfo> = tensor_infos(&mut zip)
        .map_err(fail)?
        .into_iter()
        .filter(|i| !is_batches_tracked(&i.name))
        .collect();
    // Sorted, so which error a file with several bad tensors gives is fixed.
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    if infos.is_empty() {
        return Err(fail(msg(
            "no tensors found: not a PyTorch state dict".into()
        )));
    }
    if let Some(dup) = infos.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(fail(msg(format!("tensor `{}` stored twice", dup[0].name))));
    }
    // Every extent before any read: tensors sharing one storage could
    // otherwise make a small file read its largest storage many times.
    let mut total = 0u64;
    for info in &infos {
        total = total.saturating_add(check_extent(info, &entries).map_err(fail)?);
    }
    let bound = file_len.saturating_mul(MAX_SHARING);
    if total > bound {
        return Err(fail(msg(format!(
            "its tensors take {total} bytes, more than {MAX_SHARING} x the file's {file_len} \
             (tensors sharing storages)"
        ))));
    }
    let mut tensors = HashMap::with_capacity(infos.len());
    for info in infos {
        let tensor = read_tensor(&mut zip, &info)
            .map_err(|e| fail(e.context(format!("tensor `{}`", info.name))))?;
        tensors.insert(info.name, tensor);
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
