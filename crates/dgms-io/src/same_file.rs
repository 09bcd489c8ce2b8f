//! Is an output path one of the inputs?

use std::path::{Path, PathBuf};

use crate::error::IoError;
use crate::Result;

/// Whether `a` and `b` name the same file: the same device and inode when
/// both exist (this sees through symlinks and hard links), otherwise the
/// same canonical parent directory and file name.
pub fn is_same_file(a: &Path, b: &Path) -> bool {
    if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        return same_inode(&ma, &mb);
    }
    match (canonical_target(a), canonical_target(b)) {
        (Some(ca), Some(cb)) => ca == cb,
        _ => a == b,
    }
}

#[cfg(unix)]
fn same_inode(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_inode(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    // Without inode numbers, fall back to comparing canonical paths.
    false
}

/// The canonical path of `p`'s parent joined with its file name (works for
/// a file that does not exist yet, as long as its directory does).
fn canonical_target(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Some(c);
    }
    let name = p.file_name()?;
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(parent.canonicalize().ok()?.join(name))
}

/// Fails with [`IoError::OutputIsInput`] if `output` (given as
/// `output_flag`) is the same file as any of `inputs` (flag, path).
pub fn ensure_not_input(output_flag: &str, output: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    for (input_flag, input) in inputs {
        if is_same_file(output, input) {
            return Err(IoError::OutputIsInput {
                output_flag: output_flag.to_string(),
                output: output.to_path_buf(),
                input_flag: input_flag.to_string(),
                input: input.to_path_buf(),
            });
        }
    }
    Ok(())
}
