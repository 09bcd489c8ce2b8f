//! Where test fixtures live, and what a test does when one is missing.
//!
//! Two places hold fixtures:
//!
//! - the repository's own `fixtures/` ([`repo_fixture`]): always present in
//!   a checkout, so a test that needs one simply fails without it;
//! - the shared folder beside the repository, `../shared` ([`shared_dir`]),
//!   with large or third-party files (torchvision weights, more reference
//!   cases). It exists on CI and on development machines but not
//!   necessarily in every clone. A test that needs it **skips** when it is
//!   absent, printing a note, unless the environment variable
//!   [`REQUIRE_ENV`] (`DGMS_REQUIRE_FIXTURES`) is `1`: then the test
//!   **fails**, naming the missing path. CI sets it, so a check that could
//!   silently skip everywhere cannot.
//!
//! Typical use:
//!
//! ```no_run
//! use dgms_test_support::fixtures;
//!
//! let Some(weights) = fixtures::shared_fixture("fixtures/models/resnet18.pth") else {
//!     return; // absent and not required: the note is printed
//! };
//! # let _ = weights;
//! ```

use std::path::{Path, PathBuf};

/// Environment variable that turns a missing shared fixture from a skip
/// into a failure: `1` requires, unset, empty or `0` skips.
pub const REQUIRE_ENV: &str = "DGMS_REQUIRE_FIXTURES";

/// What to do about a missing fixture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Absent {
    /// Print a note and let the test pass without the check.
    Skip,
    /// Fail the test (panic) naming the missing path.
    Fail,
}

impl Absent {
    /// The policy for a value of [`REQUIRE_ENV`]: `None`, `""` or `"0"`
    /// skip, `"1"` fails. Any other value panics, so that a mistyped
    /// setting (`true`, `yes`) cannot quietly turn the requirement off.
    pub fn from_setting(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            None | Some("") | Some("0") => Absent::Skip,
            Some("1") => Absent::Fail,
            Some(other) => panic!("{REQUIRE_ENV}={other:?}: expected 1 (require) or 0 (skip)"),
        }
    }

    /// The policy set by the environment of this test process.
    pub fn from_env() -> Self {
        let value = std::env::var_os(REQUIRE_ENV).map(|v| v.to_string_lossy().into_owned());
        Self::from_setting(value.as_deref())
    }

    /// `Some(path)` if `path` exists; otherwise, by the policy, prints a
    /// note that `what` is skipped and returns `None`, or panics naming
    /// `path` and `what`.
    pub fn check(self, path: impl AsRef<Path>, what: &str) -> Option<PathBuf> {
        let path = path.as_ref();
        if path.exists() {
            return Some(path.to_path_buf());
        }
        match self {
            Absent::Skip => {
                println!(
                    "note: fixture {} is absent: {what} skipped (set {REQUIRE_ENV}=1 to fail instead)",
                    path.display()
                );
                None
            }
            Absent::Fail => panic!(
                "fixture {} is missing, and {REQUIRE_ENV}=1 requires it ({what})",
                path.display()
            ),
        }
    }
}

/// The workspace root (the repository checkout), as seen when this crate
/// was compiled.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `relative` under the repository's root, e.g. `fixtures/reference`.
pub fn repo_fixture(relative: impl AsRef<Path>) -> PathBuf {
    workspace_root().join(relative)
}

/// The shared folder beside the repository (`../shared`).
pub fn shared_dir() -> PathBuf {
    workspace_root().join("../shared")
}

/// The value of the environment variable `var` as a path when it is set,
/// else `default`. For fixture folders a test lets the caller move
/// (`DGMS_REFERENCE_DIR`, `DGMS_PARITY_DIR`); a set but empty value is kept
/// (an empty path), so a test that needs the folder fails on it rather
/// than silently using the default.
pub fn dir_from_env(var: &str, default: PathBuf) -> PathBuf {
    match std::env::var_os(var) {
        Some(dir) => PathBuf::from(dir),
        None => default,
    }
}

/// `relative` under the shared folder if it exists; if not, skips or fails
/// as [`REQUIRE_ENV`] says ([`Absent::check`]), naming the path.
pub fn shared_fixture(relative: impl AsRef<Path>) -> Option<PathBuf> {
    let relative = relative.as_ref();
    let what = format!("the check needing {}", relative.display());
    Absent::from_env().check(shared_dir().join(relative), &what)
}
