//! Errors of file output, each naming the file.

use std::path::PathBuf;

/// What went wrong writing or guarding a file.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// An operation on `path` failed.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The output path names an input of the same command.
    #[error(
        "{output_flag} {output} is the same file as {input_flag} {input}: \
         refusing to overwrite an input (choose another output path)"
    )]
    OutputIsInput {
        output_flag: String,
        output: PathBuf,
        input_flag: String,
        input: PathBuf,
    },
}

impl IoError {
    /// A closure turning an `io::Error` into [`IoError::Io`] for `path`.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
