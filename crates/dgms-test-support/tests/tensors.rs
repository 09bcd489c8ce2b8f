//! Tensor conversion and var-map helpers (feature `candle`) on hand-made
//! cases.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dgms_test_support::tensors::{rel_diff_tensors, to_f32_vec, to_f64_vec};
use dgms_test_support::varmap::{names_and_shapes, value_count};

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
