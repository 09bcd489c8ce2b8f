//! # dgms-io
//!
//! Every file the project writes goes through [`write_atomic`] (or
//! [`write_atomic_with`]): the bytes go to a temporary file in the same
//! directory, which is synced, renamed over the target and followed by a
//! sync of the directory. A reader (or a process restarted after a crash)
//! therefore sees either the old file or the complete new one, never a
//! torn one; a crash leaves at most a stray `.NAME.*.tmp` file beside it.
//!
//! [`ensure_not_input`] refuses an output path that names one of the
//! command's inputs (the same path, a symlink to it, or a hard link: the
//! same device and inode), so that no command replaces what it reads.
//!
//! [`check_safetensors`] is the one structural check of safetensors bytes
//! (header length, header JSON, dtypes, shapes against offsets, offsets
//! tiling the data section) that every reader runs before parsing.

mod atomic;
mod error;
pub mod safetensors_check;
mod same_file;

pub use atomic::{write_atomic, write_atomic_with};
pub use error::IoError;
pub use safetensors_check::{check_safetensors, SafetensorsCheckError, SafetensorsLayout};
pub use same_file::{ensure_not_input, is_same_file};

/// Result with this crate's error.
pub type Result<T> = std::result::Result<T, IoError>;
