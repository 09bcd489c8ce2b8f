//! `DGMS_REQUIRE_FIXTURES` end to end through [`fixtures::shared_fixture`].
//! Alone in its test binary, and one test, because it sets a process-wide
//! environment variable.

use std::panic::catch_unwind;

use dgms_test_support::fixtures::{self, REQUIRE_ENV};

#[test]
fn require_env_turns_a_skip_into_a_failure() {
    let absent = "fixtures/no-such-fixture-for-dgms-test-support.bin";

    std::env::remove_var(REQUIRE_ENV);
    assert_eq!(fixtures::shared_fixture(absent), None);
    std::env::set_var(REQUIRE_ENV, "0");
    assert_eq!(fixtures::shared_fixture(absent), None);

    std::env::set_var(REQUIRE_ENV, "1");
    let err = catch_unwind(|| fixtures::shared_fixture(absent)).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    let path = fixtures::shared_dir().join(absent).display().to_string();
    assert!(msg.contains(&path) && msg.contains("is missing"), "{msg}");

    // A folder that exists is returned when required too.
    std::env::set_var(REQUIRE_ENV, "1");
    let here = fixtures::workspace_root();
    assert_eq!(
        fixtures::Absent::from_env().check(&here, "t"),
        Some(here.clone())
    );

    std::env::set_var(REQUIRE_ENV, "on");
    assert!(catch_unwind(fixtures::Absent::from_env).is_err());
    std::env::remove_var(REQUIRE_ENV);
}
