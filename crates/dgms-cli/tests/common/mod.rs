//! Helpers shared by the `dgms` binary's integration tests: the fixture
//! paths, running the binary, and comparing logits. The generic parts
//! (fixture lookup, relative error, tensor values) are dgms-test-support's.

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dgms_test_support::fixtures;

pub fn pretrained() -> PathBuf {
    fixtures::repo_fixture("fixtures/pretrained/resnet20-fashion-mnist.safetensors")
}

/// The shared parity fixtures (`$DGMS_PARITY_DIR`, else
/// `../shared/fixtures/models`) if the folder exists; if not, skips `what`
/// with a note, or fails when `DGMS_REQUIRE_FIXTURES=1`.
pub fn shared_fixtures(what: &str) -> Option<PathBuf> {
    let dir = fixtures::dir_from_env(
        "DGMS_PARITY_DIR",
        fixtures::shared_dir().join("fixtures/models"),
    );
    fixtures::Absent::from_env().check(dir, what)
}

pub fn dgms(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_dgms"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run dgms");
    println!(
        "$ dgms {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

pub fn dgms_ok(args: &[&str]) -> String {
    let out = dgms(args);
    assert!(
        out.status.success(),
        "dgms {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn dgms_err(args: &[&str]) -> String {
    let out = dgms(args);
    assert_eq!(out.status.code(), Some(1), "dgms {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

/// A test path as the `&str` argument the binary takes.
pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `dgms args`, expecting exit code `code` and no panic; returns stderr.
pub fn fails_with(args: &[&str], code: i32) -> String {
    let out = dgms(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "dgms {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "dgms {args:?}: {stderr}");
    stderr
}
