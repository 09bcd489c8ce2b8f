//! Relative errors: the largest absolute difference over the largest
//! expected magnitude, so one number judges a whole tensor whatever its
//! scale.

/// max |got - expected| / max(max |expected|, `floor`), in f64. `floor`
/// keeps an all-zero expectation from dividing by zero.
pub fn rel_err(got: &[f64], expected: &[f64], floor: f64) -> f64 {
    assert_eq!(got.len(), expected.len(), "length mismatch");
    let max_diff = got
        .iter()
        .zip(expected)
        .map(|(g, e)| (g - e).abs())
        .fold(0.0, f64::max);
    let max_ref = expected.iter().map(|e| e.abs()).fold(floor, f64::max);
    max_diff / max_ref
}

/// [`rel_err`] over the entries where `mask` holds; the plain max |diff|
/// when every expected value there is 0.
pub fn rel_err_masked(got: &[f64], expected: &[f64], mask: &[bool]) -> f64 {
    assert_eq!(got.len(), expected.len(), "length mismatch");
    let mut max_diff: f64 = 0.0;
    let mut max_ref: f64 = 0.0;
    for ((g, e), &m) in got.iter().zip(expected).zip(mask) {
        if m {
            max_diff = max_diff.max((g - e).abs());
            max_ref = max_ref.max(e.abs());
        }
    }
    if max_ref == 0.0 {
        max_diff
    } else {
        max_diff / max_ref
    }
}

/// max |a - b| / max(max |b|, `floor`), in f32.
pub fn rel_diff_with_floor(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    let scale = b.iter().fold(0.0f32, |m, y| m.max(y.abs()));
    diff / scale.max(floor)
}

/// max |a - b| / max |b| in f32 (`b` the expected values), floored at
/// `f32::MIN_POSITIVE`.
pub fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    rel_diff_with_floor(a, b, f32::MIN_POSITIVE)
}

/// Agreement of two logit batches (n x classes): (max |a-b| / max |b|,
/// images with the same top-1). No floor: all-zero reference logits give
/// NaN or infinity, which fail every tolerance, as they should.
pub fn logit_agreement(a: &[f32], b: &[f32], classes: usize) -> (f32, usize) {
    let rel = rel_diff_with_floor(a, b, 0.0);
    let argmax = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j]));
    let same = a
        .chunks_exact(classes)
        .zip(b.chunks_exact(classes))
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count();
    (rel, same)
}
