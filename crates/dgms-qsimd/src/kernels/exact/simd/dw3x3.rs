//! Depthwise 3x3 kernels for AVX2 and AVX-512, one channel per call, with
//! the channel's output stage (scale, shift, residual, ReLU / ReLU6)
//! applied in registers before the one store of each output vector.
//!
//! - Stride 1 runs over the channel's plane as one flat row of `h * w`
//!   outputs (so 7x7 and 14x14 maps fill whole vectors): output `p` reads
//!   `p + dy * w + dx`, `dy, dx` in -1..=1, from a copy of the plane with
//!   `w + 1` zeros before and after it (the rows above and below). Taps
//!   of the left and right kernel columns are summed apart and added
//!   under a mask of the lanes whose output column is not the first
//!   (resp. last): the lanes' columns `p mod w` advance by `VL mod w`.
//! - Stride 2 runs per output row over the zero-bordered plane split into
//!   even and odd padded columns (see `split_s2` in `depthwise.rs`):
//!   taps kx = 0, 1, 2 read `even[ox]`, `odd[ox]`, `even[ox + 1]`.
//!
//! Every function is `#[target_feature]`, reached only from
//! `depthwise.rs` with a `CheckedIsa` for its ISA.

use std::arch::x86_64::*;

use crate::kernels::epilogue::Activation;
use crate::kernels::exact::depthwise::{ChanEpi, S2Planes};

/// Slack after a stride-1 scratch plane: the last vector's loads of the
/// row below run up to `VL - 1` values past it (VL <= 16).
pub(crate) const S1_SLACK: usize = 16;

/// Length of the stride-1 scratch for a plane of `n` values, `w` wide.
pub(crate) fn s1_len(n: usize, w: usize) -> usize {
    n + 2 * (w + 1) + S1_SLACK
}

/// The lanes' first output columns `(p0 + i) mod w`.
fn first_cols<const VL: usize>(w: usize) -> [i32; VL] {
    // Counting, not `i % w`: a division per lane costs as much as a 7x7
    // channel's whole convolution.
    let mut c = 0;
    std::array::from_fn(|_| {
        let v = c;
        c = if c + 1 == w { 0 } else { c + 1 };
        v as i32
    })
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn epi512(v: __m512, e: &ChanEpi, p: usize, k: __mmask16) -> __m512 {
    let mut v = _mm512_fmadd_ps(v, _mm512_set1_ps(e.scale), _mm512_set1_ps(e.shift));
    if let Some(res) = e.residual {
        assert!(p < res.len());
        // SAFETY: lanes of k are below res.len() - p (k's contract, see
        // callers); masked-off lanes are not read.
        v = _mm512_add_ps(v, unsafe { _mm512_maskz_loadu_ps(k, res.as_ptr().add(p)) });
    }
    // max(v, 0) gives 0 for NaN (f32::max); max(0, v) keeps NaN (clamp).
    match e.act {
        Activation::None => v,
        Activation::Relu => _mm512_max_ps(v, _mm512_setzero_ps()),
        Activation::Relu6 => {
            _mm512_min_ps(_mm512_set1_ps(6.0), _mm512_max_ps(_mm512_setzero_ps(), v))
        }
    }
}

/// Mask of the first `min(rem, 16)` lanes.
fn mask16(rem: usize) -> __mmask16 {
    if rem >= 16 {
        0xffff
    } else {
        ((1u32 << rem) - 1) as __mmask16
    }
}

/// Stride 1: `out` (h * w values) from `src`, the plane with `w + 1` zeros
/// before it and at least `w + 1 + 16` after (`s1_len`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) fn s1_avx512(t: &[f32; 9], src: &[f32], w: usize, out: &mut [f32], e: &ChanEpi) {
    let n = out.len();
    assert!(w >= 1 && src.len() >= s1_len(n, w));
    assert!(e.residual.is_none_or(|r| r.len() == n));
    let tv = t.map(|x| _mm512_set1_ps(x));
    let cols = first_cols::<16>(w);
    // SAFETY: cols is 16 i32.
    let mut col = unsafe { _mm512_loadu_si512(cols.as_ptr().cast()) };
    let (step, wv) = (
        _mm512_set1_epi32((16 % w) as i32),
        _mm512_set1_epi32(w as i32),
    );
    let (zero, last) = (_mm512_setzero_si512(), _mm512_set1_epi32(w as i32 - 1));
    let base = src.as_ptr();
    let mut p = 0;
    while p < n {
        // Plane offset p sits at src[w + 1 + p]; rows above / below at -+w.
        let c = w + 1 + p;
        // SAFETY: the lowest index read is c - w - 1 = p >= 0, the highest
        // c + w + 1 + 15 = p + 2w + 17 < n + 2w + 2 + 16 <= src.len()
        // (p < n, asserted length).
        let ld = |i: usize| unsafe { _mm512_loadu_ps(base.add(i)) };
        let mut mid = _mm512_mul_ps(tv[1], ld(c - w));
        mid = _mm512_fmadd_ps(tv[4], ld(c), mid);
        mid = _mm512_fmadd_ps(tv[7], ld(c + w), mid);
        let mut l = _mm512_mul_ps(tv[0], ld(c - w - 1));
        l = _mm512_fmadd_ps(tv[3], ld(c - 1), l);
        l = _mm512_fmadd_ps(tv[6], ld(c + w - 1), l);
        let mut r = _mm512_mul_ps(tv[2], ld(c - w + 1));
        r = _mm512_fmadd_ps(tv[5], ld(c + 1), r);
        r = _mm512_fmadd_ps(tv[8], ld(c + w + 1), r);
        let kl = _mm512_cmpneq_epi32_mask(col, zero);
        let kr = _mm512_cmpneq_epi32_mask(col, last);
        let acc = _mm512_mask_add_ps(mid, kl, mid, l);
        let acc = _mm512_mask_add_ps(acc, kr, acc, r);
        let k = mask16(n - p);
        let v = epi512(acc, e, p, k);
        // SAFETY: the lanes of k are p..min(p + 16, n), inside out.
        unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(p), k, v) };
        col = _mm512_add_epi32(col, step);
        let wrap = _mm512_cmpge_epi32_mask(col, wv);
        col = _mm512_mask_sub_epi32(col, wrap, col, wv);
        p += 16;
    }
}

/// Stride 2: `out` (oh x ow) from the split planes `s` (taps kx = 0, 1,
/// 2 read `even[ox]`, `odd[ox]`, `even[ox + 1]`). Reading the plane
/// directly and splitting in registers (`vpermt2ps` + `valignd`, no
/// scratch) measured 10 % faster at 112 x 112 but 1.5-1.8x slower on the
/// 56 x 56 to 14 x 14 maps, so both ISAs split first.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) fn s2_avx512(t: &[f32; 9], s: &S2Planes, out: &mut [f32], e: &ChanEpi) {
    let (ow, hp) = (s.ow, s.pitch);
    assert!(ow >= 1 && hp > ow.next_multiple_of(16));
    assert!(e.residual.is_none_or(|r| r.len() == out.len()));
    let oh = out.len() / ow;
    assert!(s.data.len() >= 2 * (2 * oh + 1) * hp);
    let tv = t.map(|x| _mm512_set1_ps(x));
    for oy in 0..oh {
        // Padded row 2 oy + ky: even half at 2 (2 oy + ky) hp, odd after it.
        let rows: [usize; 3] = std::array::from_fn(|ky| 2 * (2 * oy + ky) * hp);
        let mut ox = 0;
        while ox < ow {
            // SAFETY: rows[2] + hp + ox + 16 <= (4 oy + 5) hp + hp - 1 <=
            // 2 (2 oh + 1) hp (ox + 16 <= hp - 1, oy < oh).
            let ld = |i: usize| unsafe { _mm512_loadu_ps(s.data.as_ptr().add(i + ox)) };
            let mut a = _mm512_mul_ps(tv[0], ld(rows[0]));
            a = _mm512_fmadd_ps(tv[1], ld(rows[0] + hp), a);
            a = _mm512_fmadd_ps(tv[2], ld(rows[0] + 1), a);
            let mut b = _mm512_mul_ps(tv[3], ld(rows[1]));
            b = _mm512_fmadd_ps(tv[4], ld(rows[1] + hp), b);
            b = _mm512_fmadd_ps(tv[5], ld(rows[1] + 1), b);
            a = _mm512_fmadd_ps(tv[6], ld(rows[2]), a);
            b = _mm512_fmadd_ps(tv[7], ld(rows[2] + hp), b);
            a = _mm512_fmadd_ps(tv[8], ld(rows[2] + 1), a);
            let p = oy * ow + ox;
            let k = mask16(ow - ox);
            let v = epi512(_mm512_add_ps(a, b), e, p, k);
            // SAFETY: the lanes of k are p..p + min(16, ow - ox), inside
            // row oy of out.
            unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(p), k, v) };
            ox += 16;
        }
    }
}

/// `odd[j] = row[2j]`, `even1[j] = row[2j + 1]` for the pairs of `row`
/// (the stride-2 split; `odd` needs ceil(w / 2) values, `even1` w / 2).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) fn split_avx512(row: &[f32], odd: &mut [f32], even1: &mut [f32]) {
    let w = row.len();
    assert!(odd.len() >= w.div_ceil(2) && even1.len() >= w / 2);
    let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));
    let mut j = 0;
    while 2 * j < w {
        let rem = w - 2 * j;
        let (ka, kb) = (mask16(rem), mask16(rem.saturating_sub(16)));
        // SAFETY: the lanes of ka / kb are below w - 2j, inside row;
        // the stores' lanes are below ceil(rem / 2) (odd) and rem / 2
        // (even1) past j, inside the asserted lengths.
        unsafe {
            let a = _mm512_maskz_loadu_ps(ka, row.as_ptr().add(2 * j));
            // wrapping_add: past the row's end when kb is empty.
            let b = _mm512_maskz_loadu_ps(kb, row.as_ptr().wrapping_add(2 * j + 16));
            let (o, e) = (
                _mm512_permutex2var_ps(a, ie, b),
                _mm512_permutex2var_ps(a, io, b),
            );
            _mm512_mask_storeu_ps(odd.as_mut_ptr().add(j), mask16(rem.div_ceil(2)), o);
            _mm512_mask_storeu_ps(even1.as_mut_ptr().add(j), mask16(rem / 2), e);
        }
        j += 16;
    }
}

/// All-ones in the first `min(rem, 8)` lanes.
#[target_feature(enable = "avx2,fma")]
fn mask8(rem: usize) -> __m256i {
    let r = _mm256_set1_epi32(rem.min(8) as i32);
    _mm256_cmpgt_epi32(r, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}

#[target_feature(enable = "avx2,fma")]
fn epi256(v: __m256, e: &ChanEpi, p: usize, k: __m256i) -> __m256 {
    let mut v = _mm256_fmadd_ps(v, _mm256_set1_ps(e.scale), _mm256_set1_ps(e.shift));
    if let Some(res) = e.residual {
        assert!(p < res.len());
        // SAFETY: lanes of k are below res.len() - p (see callers);
        // masked-off lanes are not read.
        v = _mm256_add_ps(v, unsafe { _mm256_maskload_ps(res.as_ptr().add(p), k) });
    }
    match e.act {
        Activation::None => v,
        Activation::Relu => _mm256_max_ps(v, _mm256_setzero_ps()),
        Activation::Relu6 => {
            _mm256_min_ps(_mm256_set1_ps(6.0), _mm256_max_ps(_mm256_setzero_ps(), v))
        }
    }
}

/// [`s1_avx512`] with 8 lanes.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn s1_avx2(t: &[f32; 9], src: &[f32], w: usize, out: &mut [f32], e: &ChanEpi) {
    let n = out.len();
    assert!(w >= 1 && src.len() >= s1_len(n, w));
    assert!(e.residual.is_none_or(|r| r.len() == n));
    let tv = t.map(|x| _mm256_set1_ps(x));
    let cols = first_cols::<8>(w);
    // SAFETY: cols is 8 i32.
    let mut col = unsafe { _mm256_loadu_si256(cols.as_ptr().cast()) };
    let (step, wv) = (
        _mm256_set1_epi32((8 % w) as i32),
        _mm256_set1_epi32(w as i32),
    );
    let (zero, last) = (_mm256_setzero_si256(), _mm256_set1_epi32(w as i32 - 1));
    let base = src.as_ptr();
    let mut p = 0;
    while p < n {
        let c = w + 1 + p;
        // SAFETY: as in s1_avx512, with 8 lanes (highest index p + 2w + 9).
        let ld = |i: usize| unsafe { _mm256_loadu_ps(base.add(i)) };
        let mut mid = _mm256_mul_ps(tv[1], ld(c - w));
        mid = _mm256_fmadd_ps(tv[4], ld(c), mid);
        mid = _mm256_fmadd_ps(tv[7], ld(c + w), mid);
        let mut l = _mm256_mul_ps(tv[0], ld(c - w - 1));
        l = _mm256_fmadd_ps(tv[3], ld(c - 1), l);
        l = _mm256_fmadd_ps(tv[6], ld(c + w - 1), l);
        let mut r = _mm256_mul_ps(tv[2], ld(c - w + 1));
        r = _mm256_fmadd_ps(tv[5], ld(c + 1), r);
        r = _mm256_fmadd_ps(tv[8], ld(c + w + 1), r);
        // Lanes in the first column drop l, in the last drop r.
        let first = _mm256_castsi256_ps(_mm256_cmpeq_epi32(col, zero));
        let lastc = _mm256_castsi256_ps(_mm256_cmpeq_epi32(col, last));
        let acc = _mm256_add_ps(mid, _mm256_andnot_ps(first, l));
        let acc = _mm256_add_ps(acc, _mm256_andnot_ps(lastc, r));
        let k = mask8(n - p);
        let v = epi256(acc, e, p, k);
        // SAFETY: the lanes of k are p..min(p + 8, n), inside out.
        unsafe { _mm256_maskstore_ps(out.as_mut_ptr().add(p), k, v) };
        col = _mm256_add_epi32(col, step);
        let wrap = _mm256_cmpgt_epi32(col, last);
        col = _mm256_sub_epi32(col, _mm256_and_si256(wrap, wv));
        p += 8;
    }
}

/// Stride 2 with 8 lanes: `out` (oh x ow) from the split planes `s`
/// (taps kx = 0, 1, 2 read `even[ox]`, `odd[ox]`, `even[ox + 1]`).
#[target_feature(enable = "avx2,fma")]
pub(crate) fn s2_avx2(t: &[f32; 9], s: &S2Planes, out: &mut [f32], e: &ChanEpi) {
    let (ow, hp) = (s.ow, s.pitch);
    assert!(ow >= 1 && hp > ow.next_multiple_of(8));
    assert!(e.residual.is_none_or(|r| r.len() == out.len()));
    let oh = out.len() / ow;
    assert!(s.data.len() >= 2 * (2 * oh + 1) * hp);
    let tv = t.map(|x| _mm256_set1_ps(x));
    for oy in 0..oh {
        let rows: [usize; 3] = std::array::from_fn(|ky| 2 * (2 * oy + ky) * hp);
        let mut ox = 0;
        while ox < ow {
            // SAFETY: rows[2] + hp + ox + 8 <= (4 oy + 5) hp + hp - 1 <=
            // 2 (2 oh + 1) hp (ox + 8 <= hp - 1, oy < oh).
            let ld = |i: usize| unsafe { _mm256_loadu_ps(s.data.as_ptr().add(i + ox)) };
            let mut a = _mm256_mul_ps(tv[0], ld(rows[0]));
            a = _mm256_fmadd_ps(tv[1], ld(rows[0] + hp), a);
            a = _mm256_fmadd_ps(tv[2], ld(rows[0] + 1), a);
            let mut b = _mm256_mul_ps(tv[3], ld(rows[1]));
            b = _mm256_fmadd_ps(tv[4], ld(rows[1] + hp), b);
            b = _mm256_fmadd_ps(tv[5], ld(rows[1] + 1), b);
            a = _mm256_fmadd_ps(tv[6], ld(rows[2]), a);
            b = _mm256_fmadd_ps(tv[7], ld(rows[2] + hp), b);
            a = _mm256_fmadd_ps(tv[8], ld(rows[2] + 1), a);
            let p = oy * ow + ox;
            let k = mask8(ow - ox);
            let v = epi256(_mm256_add_ps(a, b), e, p, k);
            // SAFETY: the lanes of k are p..p + min(8, ow - ox), inside
            // row oy of out.
            unsafe { _mm256_maskstore_ps(out.as_mut_ptr().add(p), k, v) };
            ox += 8;
        }
    }
}

/// [`split_avx512`] with 8-lane vectors and a scalar tail.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn split_avx2(row: &[f32], odd: &mut [f32], even1: &mut [f32]) {
    let w = row.len();
    assert!(odd.len() >= w.div_ceil(2) && even1.len() >= w / 2);
    let mut j = 0;
    while 2 * j + 16 <= w {
        // SAFETY: 2j + 16 <= w values of row are read; 8 values at j of
        // odd and even1 are written, j + 8 <= w / 2.
        unsafe {
            let a = _mm256_loadu_ps(row.as_ptr().add(2 * j));
            let b = _mm256_loadu_ps(row.as_ptr().add(2 * j + 8));
            // [a0 a2 b0 b2 a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6].
            let fix =
                |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(v)));
            _mm256_storeu_ps(
                odd.as_mut_ptr().add(j),
                fix(_mm256_shuffle_ps::<0x88>(a, b)),
            );
            _mm256_storeu_ps(
                even1.as_mut_ptr().add(j),
                fix(_mm256_shuffle_ps::<0xDD>(a, b)),
            );
        }
        j += 8;
    }
    for (jj, pair) in row[2 * j..].chunks(2).enumerate() {
        odd[j + jj] = pair[0];
        if let Some(&v) = pair.get(1) {
            even1[j + jj] = v;
        }
    }
}
