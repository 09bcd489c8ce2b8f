//! Relative errors and logit agreement on hand-made cases.

use dgms_test_support::compare::{
    logit_agreement, rel_diff, rel_diff_with_floor, rel_err, rel_err_masked,
};

#[test]
fn relative_errors() {
    assert_eq!(rel_err(&[1.0, 2.5], &[1.0, 2.0], 1e-12), 0.25);
    // The floor applies when every expected value is small.
    assert_eq!(rel_err(&[1e-3], &[0.0], 1e-2), 0.1);
    let mask = [true, false, true];
    assert_eq!(
        rel_err_masked(&[1.0, 9.0, 4.5], &[1.0, 1.0, 4.0], &mask),
        0.125
    );
    assert_eq!(
        rel_err_masked(&[0.5, 9.0], &[0.0, 1.0], &[true, false]),
        0.5
    );
    assert_eq!(rel_diff(&[1.0, -3.0], &[1.0, -4.0]), 0.25);
    assert_eq!(rel_diff(&[0.0], &[0.0]), 0.0);
    assert!((rel_diff_with_floor(&[1e-6], &[0.0], 1e-3) - 1e-3).abs() < 1e-9);
}

#[test]
#[should_panic(expected = "length mismatch")]
fn lengths_must_agree() {
    rel_diff(&[1.0], &[1.0, 2.0]);
}

#[test]
fn logit_agreement_counts_equal_top1_and_measures_the_largest_difference() {
    // Two images, three classes: the first keeps its top-1 (class 2), the
    // second's moves from class 0 to class 1.
    let reference = [0.0, 1.0, 4.0, 2.0, 1.0, 0.0];
    let got = [0.0, 1.0, 3.0, 2.0, 2.5, 0.0];
    let (rel, same) = logit_agreement(&got, &reference, 3);
    assert_eq!(same, 1);
    assert_eq!(rel, 1.5 / 4.0);
    // All-zero reference logits give no finite ratio, so no tolerance passes.
    let (rel, _) = logit_agreement(&[1.0, 0.0], &[0.0, 0.0], 2);
    assert!(!rel.is_finite());
}
