//! AVX-512 int8 kernels. A 64-byte line is one zmm: 16 rows, one dword
//! each. 4-bit lines decode with one `vpshufb` on the 16-entry int8 table
//! (replicated in the 4 lanes) per 64 weights.
//! - VNNI: `vpdpbusd` (u8 x i8, 4 products summed into i32, no saturation)
//!   with activations as q + 128; the driver subtracts 128 * rowsum.
//! - BW only: `vpmaddubsw` + `vpmaddwd` by 1 on |a| and b * sign(a) (at
//!   most 2 * 127^2 = 32258 per i16 pair: no saturation). AVX-512 has no
//!   `vpsignb`: a masked `0 - b` on the negative bytes of `a` does it.
//!   `NONNEG` variants (no activation negative) skip it.
//!
//! Every function here is `#[target_feature]`; callers reach them only
//! with the `Kern` chosen from a `CheckedIsa` for `Isa::Avx512`, the
//! VNNI ones only when `Kern::select` detected VNNI.

use std::arch::x86_64::*;

use crate::kernels::layout::Line;

/// Micro-tile rows.
pub(crate) const MR: usize = 8;
/// Micro-tile vectors along n (16 columns each).
const NV: usize = 2;
/// Micro-tile columns.
pub(crate) const NR: usize = 16 * NV;

/// The 4 bytes at `s[i..i + 4]` as one dword (to broadcast): one
/// bounds check and one load, not four.
#[inline(always)]
fn quad(s: &[u8], i: usize) -> i32 {
    let b: [u8; 4] = s[i..i + 4].try_into().unwrap_or_default();
    i32::from_le_bytes(b)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn load_table(table: &[i8; 16]) -> __m512i {
    // SAFETY: table is 16 readable bytes.
    let t = unsafe { _mm_loadu_si128(table.as_ptr().cast()) };
    _mm512_broadcast_i32x4(t)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn load_line(line: &Line) -> __m512i {
    // SAFETY: a Line is 64 bytes, 64-byte aligned.
    unsafe { _mm512_load_si512(line.0.as_ptr().cast()) }
}

/// The int8 weights of the low (columns 0-3) and high (4-7) nibbles.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn decode(v: __m512i, table: __m512i) -> [__m512i; 2] {
    let m = _mm512_set1_epi8(0x0F);
    [
        _mm512_shuffle_epi8(table, _mm512_and_si512(v, m)),
        _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16::<4>(v), m)),
    ]
}

/// acc += (u * s) summed over each dword's 4 bytes; `u` unsigned <= 127,
/// `s` signed in [-127, 127].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn dot4(acc: __m512i, u: __m512i, s: __m512i) -> __m512i {
    let pairs = _mm512_maddubs_epi16(u, s);
    _mm512_add_epi32(acc, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)))
}

/// `b` with the bytes negated where `neg` is set (b * sign(a) for the
/// bytes of `a` that are nonzero; where a = 0 the other factor is |a| = 0).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn negate_where(b: __m512i, neg: __mmask64) -> __m512i {
    _mm512_mask_sub_epi8(b, neg, _mm512_setzero_si512(), b)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn store16(a: __m512i, b: __m512i) -> [i32; 16] {
    let mut out = [0i32; 16];
    // SAFETY: out is 16 i32 = 64 bytes.
    unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), _mm512_add_epi32(a, b)) };
    out
}

/// `acc[16]` (activations offset by 128) of one row group of 4-bit lines;
/// `xu` = q_x + 128, padded to 8 per line.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(crate) fn gemv_nibble_vnni(lines: &[Line], table: &[i8; 16], xu: &[u8]) -> [i32; 16] {
    assert!(xu.len() >= 8 * lines.len());
    let t = load_table(table);
    let mut acc = [_mm512_setzero_si512(); 2];
    for (c, line) in lines.iter().enumerate() {
        let w = decode(load_line(line), t);
        for (j, (a, wj)) in acc.iter_mut().zip(w).enumerate() {
            *a = _mm512_dpbusd_epi32(*a, _mm512_set1_epi32(quad(xu, 8 * c + 4 * j)), wj);
        }
    }
    store16(acc[0], acc[1])
}

/// `acc[16]` (activations offset by 128) of one row group of 8-bit lines;
/// `xu` padded to 4 per line.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(crate) fn gemv_byte_vnni(lines: &[Line], xu: &[u8]) -> [i32; 16] {
    assert!(xu.len() >= 4 * lines.len());
    let mut acc = [_mm512_setzero_si512(); 2];
    for (c, line) in lines.iter().enumerate() {
        let x = _mm512_set1_epi32(quad(xu, 4 * c));
        acc[c % 2] = _mm512_dpbusd_epi32(acc[c % 2], x, load_line(line));
    }
    store16(acc[0], acc[1])
}

/// `acc[16]` of one row group of 4-bit lines; `xa` = |q_x|, `xs` = q_x,
/// both padded to 8 per line. `NONNEG`: no q_x is negative.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) fn gemv_nibble_bw<const NONNEG: bool>(
    lines: &[Line],
    table: &[i8; 16],
    xa: &[u8],
    xs: &[u8],
) -> [i32; 16] {
    assert!(xa.len() >= 8 * lines.len() && xs.len() >= 8 * lines.len());
    let t = load_table(table);
    let mut acc = [_mm512_setzero_si512(); 2];
    for (c, line) in lines.iter().enumerate() {
        let w = decode(load_line(line), t);
        for (j, (a, wj)) in acc.iter_mut().zip(w).enumerate() {
            let i = 8 * c + 4 * j;
            // |x| * (w * sign(x)) = w * x.
            let s = if NONNEG {
                wj
            } else {
                negate_where(wj, _mm512_movepi8_mask(_mm512_set1_epi32(quad(xs, i))))
            };
            *a = dot4(*a, _mm512_set1_epi32(quad(xa, i)), s);
        }
    }
    store16(acc[0], acc[1])
}

/// `acc[16]` of one row group of 8-bit lines; `xa`, `xs` padded to 4 per
/// line. `NONNEG`: no q_x is negative.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) fn gemv_byte_bw<const NONNEG: bool>(lines: &[Line], xa: &[u8], xs: &[u8]) -> [i32; 16] {
    assert!(xa.len() >= 4 * lines.len() && xs.len() >= 4 * lines.len());
    let mut acc = [_mm512_setzero_si512(); 2];
    for (c, line) in lines.iter().enumerate() {
        let w = if NONNEG {
            load_line(line)
        } else {
            let neg = _mm512_movepi8_mask(_mm512_set1_epi32(quad(xs, 4 * c)));
            negate_where(load_line(line), neg)
        };
        acc[c % 2] = dot4(acc[c % 2], _mm512_set1_epi32(quad(xa, 4 * c)), w);
    }
    store16(acc[0], acc[1])
}

/// Decodes 4-bit lines into `[k/4][16][4]` int8 rows (`out`: 128 bytes per
/// line: the low nibbles' 64, then the high nibbles').
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) fn decode_nibble(lines: &[Line], table: &[i8; 16], out: &mut [u8]) {
    assert!(out.len() >= 128 * lines.len());
    let t = load_table(table);
    for (c, line) in lines.iter().enumerate() {
        for (j, wj) in decode(load_line(line), t).into_iter().enumerate() {
            // SAFETY: 128 c + 64 j + 64 <= 128 (c + 1) <= out.len().
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(128 * c + 64 * j).cast(), wj) };
        }
    }
}

/// Stores (or adds) the MR x NR accumulators into `c`, rows `ldc` apart.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn store_tile(acc: &[[__m512i; NV]; MR], c: &mut [i32], ldc: usize, acc_in: bool) {
    assert!(c.len() >= (MR - 1) * ldc + NR);
    let cp = c.as_mut_ptr();
    for (i, row) in acc.iter().enumerate() {
        for (v, &r) in row.iter().enumerate() {
            // SAFETY: i * ldc + 16 * v + 16 <= (MR - 1) * ldc + NR <= c.len().
            unsafe {
                let p = cp.add(i * ldc + 16 * v);
                let r = if acc_in {
                    _mm512_add_epi32(_mm512_loadu_si512(p.cast()), r)
                } else {
                    r
                };
                _mm512_storeu_si512(p.cast(), r);
            }
        }
    }
}

/// The NV vectors of the NR column quads at byte `at` of `b`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn load_b(b: &[u8], at: usize) -> [__m512i; NV] {
    assert!(b.len() >= at + NR * 4);
    let mut bv = [_mm512_setzero_si512(); NV];
    for (v, out) in bv.iter_mut().enumerate() {
        // SAFETY: at + 64 v + 64 <= at + NR * 4 <= b.len().
        *out = unsafe { _mm512_loadu_si512(b.as_ptr().add(at + 64 * v).cast()) };
    }
    bv
}

/// C[MR x NR] (+)= A B over `kq` k quads (each k quad's NR column quads
/// `ldb` bytes after the previous one's) with `b` holding q_x + 128:
/// `a` holds int8 weights at `a[q * 64 + 4 i]` (row i, k 4q..4q + 4).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
pub(crate) fn ukernel_vnni(
    kq: usize,
    a: &[u8],
    (b, ldb): (&[u8], usize),
    c: &mut [i32],
    ldc: usize,
    acc_in: bool,
) {
    if kq == 0 {
        return;
    }
    assert!(a.len() >= (kq - 1) * 64 + 4 * MR);
    let mut acc = [[_mm512_setzero_si512(); NV]; MR];
    for q in 0..kq {
        let bv = load_b(b, q * ldb);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_epi32(quad(a, q * 64 + 4 * i));
            for (r, &bv) in row.iter_mut().zip(&bv) {
                *r = _mm512_dpbusd_epi32(*r, bv, ai);
            }
        }
    }
    store_tile(&acc, c, ldc, acc_in);
}

/// C[MR x NR] (+)= A B over `kq` k quads (`ldb` bytes apart in `b`) with
/// `b` holding q_x (int8;
/// `NONNEG`: none negative).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) fn ukernel_bw<const NONNEG: bool>(
    kq: usize,
    a: &[u8],
    (b, ldb): (&[u8], usize),
    c: &mut [i32],
    ldc: usize,
    acc_in: bool,
) {
    if kq == 0 {
        return;
    }
    assert!(a.len() >= (kq - 1) * 64 + 4 * MR);
    let mut acc = [[_mm512_setzero_si512(); NV]; MR];
    for q in 0..kq {
        let bv = load_b(b, q * ldb);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_epi32(quad(a, q * 64 + 4 * i));
            if NONNEG {
                // x is a valid u8 operand as it is.
                for (r, &bv) in row.iter_mut().zip(&bv) {
                    *r = dot4(*r, bv, ai);
                }
            } else {
                let (ua, neg) = (_mm512_abs_epi8(ai), _mm512_movepi8_mask(ai));
                for (r, &bv) in row.iter_mut().zip(&bv) {
                    // |w| * (x * sign(w)) = w * x.
                    *r = dot4(*r, ua, negate_where(bv, neg));
                }
            }
        }
    }
    store_tile(&acc, c, ldc, acc_in);
}
