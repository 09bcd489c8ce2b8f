//! File helpers: atomic writes, so that no reader ever sees a half-written
//! checkpoint, summary or metrics file.

use std::path::Path;

use crate::error::{Result, TrainError};

/// The temporary sibling of `path` that a write goes through.
pub fn temp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes through `write` into a temporary file beside `path`, then renames
/// it over `path`; on error the temporary file is removed.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(TrainError::io("creating", dir))?;
    }
    let tmp = temp_path(path);
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(TrainError::Write {
            path: path.to_path_buf(),
            source: Box::new(e),
        });
    }
    std::fs::rename(&tmp, path).map_err(|source| TrainError::Rename {
        from: tmp.clone(),
        to: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(TrainError::io("writing", tmp))
    })
}
