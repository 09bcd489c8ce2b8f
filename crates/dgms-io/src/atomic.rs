//! Atomic file replacement: temporary sibling, fsync, rename, directory
//! fsync.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::IoError;
use crate::Result;

/// Writes `bytes` to `path` atomically (see [`write_atomic_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Creates `path` (or replaces it) with what `write` produces, atomically:
/// `write` fills a temporary file in the same directory (missing parent
/// directories are created), which is synced to disk and renamed over
/// `path`; the directory is synced last so that the rename itself survives
/// a power loss. If `write` or any step fails, the temporary file is
/// removed and `path` is left exactly as it was.
///
/// The new file gets the permissions an ordinary create would give it
/// (0666 minus the umask on Unix), not the 0600 of a temporary file.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let file_name = path.file_name().ok_or_else(|| IoError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file"),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(IoError::io("creating directory", dir))?;

    let mut builder = tempfile::Builder::new();
    let prefix = format!(".{}.", file_name.to_string_lossy());
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder
        .tempfile_in(dir)
        .map_err(IoError::io("creating a temporary file in", dir))?;

    // Dropping `tmp` on any early return below deletes the temporary file.
    {
        let mut buffered = BufWriter::new(tmp.as_file());
        write(&mut buffered)
            .and_then(|()| buffered.flush())
            .map_err(IoError::io("writing", path))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(IoError::io("syncing", path))?;
    tmp.persist(path)
        .map_err(|e| IoError::io("renaming the temporary file to", path)(e.error))?;
    sync_dir(dir)
}

/// Syncs a directory so that a rename inside it is durable. Platforms that
/// cannot open a directory as a file (Windows) skip it: the rename is
/// already atomic there, only its durability across power loss is weaker.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let d = std::fs::File::open(dir).map_err(IoError::io("opening directory", dir))?;
        d.sync_all()
            .map_err(IoError::io("syncing directory", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
