//! Typed errors of dgms-qsimd. Every message names the file, layer or
//! tensor at fault and what was expected.

use std::path::PathBuf;

/// Result with [`QsimdError`].
pub type Result<T, E = QsimdError> = std::result::Result<T, E>;

/// Everything that can go wrong reading, writing or running a packed model.
#[derive(Debug, thiserror::Error)]
pub enum QsimdError {
    /// An I/O error on `path`.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
