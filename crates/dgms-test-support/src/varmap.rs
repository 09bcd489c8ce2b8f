//! Helpers over `candle_nn::VarMap`, the store a trainable model is built on.

use std::collections::BTreeMap;

use candle_nn::VarMap;

/// Every variable's name and shape, sorted by name.
pub fn names_and_shapes(varmap: &VarMap) -> BTreeMap<String, Vec<usize>> {
    let data = varmap.data().lock().expect("var map lock");
    data.iter()
        .map(|(n, v)| (n.clone(), v.dims().to_vec()))
        .collect()
}

/// Number of values over the variables whose names `keep` accepts.
pub fn value_count(varmap: &VarMap, keep: impl Fn(&str) -> bool) -> usize {
    names_and_shapes(varmap)
        .iter()
        .filter(|(n, _)| keep(n))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}
