//! The Python that runs the benches' peers (PyTorch, ONNX Runtime):
//! `DGMS_PYTHON` or `python3`.

use std::process::Command;

/// The interpreter: `DGMS_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("DGMS_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// `None` when the interpreter can import `modules` (comma-separated, as
/// in an `import` statement), else why not, with `install` as the hint.
pub fn unavailable(modules: &str, install: &str) -> Option<String> {
    let out = Command::new(python())
        .args(["-c", &format!("import {modules}")])
        .output();
    match out {
        Err(e) => Some(format!("cannot run {}: {e}", python())),
        Ok(o) if !o.status.success() => Some(format!(
            "{} cannot import {modules} ({install}): {}",
            python(),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Ok(_) => None,
    }
}
