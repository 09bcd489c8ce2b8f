//! Relative errors, tensor conversion and var-map helpers on hand-made cases.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dgms_test_support::compare::{
    logit_agreement, rel_diff, rel_diff_with_floor, rel_err, rel_err_masked,
};
use dgms_test_support::tensors::{rel_diff_tensors, to_f32_vec, to_f64_vec};
use dgms_test_support::varmap::{names_and_shapes, value_count};

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
fn tensors_to_host() {
    let t = Tensor::from_vec(vec![1f32, 2.0, 3.0, 4.0], (2, 2), &Device::Cpu).unwrap();
    assert_eq!(to_f32_vec(&t), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(to_f64_vec(&t), vec![1.0, 2.0, 3.0, 4.0]);
    let u = (&t * 1.5).unwrap();
    assert!((rel_diff_tensors(&u, &t) - 0.5).abs() < 1e-7);
}

#[test]
fn var_map_names_shapes_and_counts() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    vb.pp("conv").get((4, 3, 3, 3), "weight").unwrap();
    vb.pp("bn").get(4, "running_mean").unwrap();
    let map = names_and_shapes(&varmap);
    let names: Vec<&str> = map.keys().map(String::as_str).collect();
    assert_eq!(names, ["bn.running_mean", "conv.weight"]);
    assert_eq!(map["conv.weight"], vec![4, 3, 3, 3]);
    assert_eq!(value_count(&varmap, |_| true), 112);
    assert_eq!(value_count(&varmap, |n| !n.contains("running")), 108);
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
