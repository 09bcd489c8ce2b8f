//! Skip-or-fail on a missing fixture, decided by a policy value (the
//! environment variable itself is exercised in `fixtures_env.rs`, alone in
//! its process).

use std::panic::catch_unwind;

use dgms_test_support::fixtures::{self, Absent, REQUIRE_ENV};

fn missing() -> std::path::PathBuf {
    fixtures::shared_dir().join("no-such-folder/no-such-fixture.safetensors")
}

#[test]
fn settings_parse_strictly() {
    assert_eq!(REQUIRE_ENV, "DGMS_REQUIRE_FIXTURES");
    assert_eq!(Absent::from_setting(None), Absent::Skip);
    assert_eq!(Absent::from_setting(Some("")), Absent::Skip);
    assert_eq!(Absent::from_setting(Some("0")), Absent::Skip);
    assert_eq!(Absent::from_setting(Some("1")), Absent::Fail);
    assert_eq!(Absent::from_setting(Some(" 1\n")), Absent::Fail);
    for typo in ["true", "yes", "2"] {
        let err = catch_unwind(|| Absent::from_setting(Some(typo))).unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("DGMS_REQUIRE_FIXTURES") && msg.contains(typo),
            "{msg}"
        );
    }
}

#[test]
fn a_present_fixture_is_returned_under_both_policies() {
    let dir = std::env::temp_dir();
    assert_eq!(Absent::Skip.check(&dir, "t"), Some(dir.clone()));
    assert_eq!(Absent::Fail.check(&dir, "t"), Some(dir.clone()));
}

#[test]
fn a_missing_fixture_skips() {
    assert_eq!(Absent::Skip.check(missing(), "the parity check"), None);
}

#[test]
fn a_missing_required_fixture_fails_naming_it() {
    let err = catch_unwind(|| Absent::Fail.check(missing(), "the parity check")).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    let path = missing().display().to_string();
    assert!(msg.contains(&path), "{msg}");
    assert!(msg.contains("DGMS_REQUIRE_FIXTURES=1"), "{msg}");
    assert!(msg.contains("the parity check"), "{msg}");
}

#[test]
fn repository_paths() {
    let root = fixtures::workspace_root();
    assert!(root.join("Cargo.toml").is_file());
    assert!(fixtures::repo_fixture("fixtures/reference").is_dir());
    assert_eq!(fixtures::shared_dir(), root.join("../shared"));
    let default = root.join("x");
    assert_eq!(
        fixtures::dir_from_env("DGMS_TEST_SUPPORT_UNSET_VARIABLE", default.clone()),
        default
    );
}
