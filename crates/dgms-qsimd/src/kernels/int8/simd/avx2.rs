//! AVX2 int8 kernels. A 64-byte line is two ymm halves (rows 0-7 and
//! 8-15), one dword per row. 4-bit lines decode with one `vpshufb` on the
//! 16-entry int8 table per 32 weights (low nibbles: columns 0-3, high
//! nibbles: columns 4-7). Products go through `vpmaddubsw` (u8 x i8, i16
//! pair sums) then `vpmaddwd` by 1 into i32 lanes; the u8 operand is |a|
//! and the i8 one b * sign(a) (`vpabsb`, `vpsignb`), so with |q| <= 127 a
//! pair sum is at most 32258 and never saturates. `NONNEG` variants (no
//! activation negative) pass the activations as the u8 operand directly.
//!
//! Every function here is `#[target_feature]`; callers reach them only
//! with the `Kern` chosen from a `CheckedIsa` for `Isa::Avx2`.

use std::arch::x86_64::*;

use crate::kernels::layout::Line;

/// Micro-tile rows.
pub(crate) const MR: usize = 4;
/// Micro-tile vectors along n (8 columns each).
const NV: usize = 2;
/// Micro-tile columns.
pub(crate) const NR: usize = 8 * NV;

/// The 4 bytes at `s[i..i + 4]` as one dword (to broadcast): one
/// bounds check and one load, not four.
#[inline(always)]
fn quad(s: &[u8], i: usize) -> i32 {
    let b: [u8; 4] = s[i..i + 4].try_into().unwrap_or_default();
    i32::from_le_bytes(b)
}

/// acc += (u * s) summed over each dword's 4 bytes; `u` unsigned <= 127,
/// `s` signed in [-127, 127].
#[target_feature(enable = "avx2,fma")]
fn dot4(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(u, s);
    _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// The int8 weights of the low (columns 0-3) and high (4-7) nibbles.
#[target_feature(enable = "avx2,fma")]
fn decode(v: __m256i, table: __m256i) -> [__m256i; 2] {
    let m = _mm256_set1_epi8(0x0F);
    [
        _mm256_shuffle_epi8(table, _mm256_and_si256(v, m)),
        _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16::<4>(v), m)),
    ]
}

#[target_feature(enable = "avx2,fma")]
fn load_table(table: &[i8; 16]) -> __m256i {
    // SAFETY: table is 16 readable bytes.
    let t = unsafe { _mm_loadu_si128(table.as_ptr().cast()) };
    _mm256_broadcastsi128_si256(t)
}

/// Half `h` (rows 8h..8h + 8) of a line.
#[target_feature(enable = "avx2,fma")]
fn load_half(line: &Line, h: usize) -> __m256i {
    assert!(h < 2);
    // SAFETY: a Line is 64 bytes, 64-byte aligned; half h is 32 of them.
    unsafe { _mm256_load_si256(line.0.as_ptr().add(32 * h).cast()) }
}

#[target_feature(enable = "avx2,fma")]
fn store16(acc: [[__m256i; 2]; 2]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (h, a) in acc.iter().enumerate() {
        // SAFETY: out has 16 i32, 8 * h + 8 <= 16.
        unsafe {
            _mm256_storeu_si256(
                out.as_mut_ptr().add(8 * h).cast(),
                _mm256_add_epi32(a[0], a[1]),
            )
        };
    }
    out
}

/// `acc[16]` of one row group of 4-bit lines; `xa` = |q_x|, `xs` = q_x,
/// both zero-padded to 8 per line. `NONNEG`: no q_x is negative.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn gemv_nibble<const NONNEG: bool>(
    lines: &[Line],
    table: &[i8; 16],
    xa: &[u8],
    xs: &[u8],
) -> [i32; 16] {
    assert!(xa.len() >= 8 * lines.len() && xs.len() >= 8 * lines.len());
    let t = load_table(table);
    // [half][nibble]: 4 independent chains.
    let mut acc = [[_mm256_setzero_si256(); 2]; 2];
    for (c, line) in lines.iter().enumerate() {
        let ua = [
            _mm256_set1_epi32(quad(xa, 8 * c)),
            _mm256_set1_epi32(quad(xa, 8 * c + 4)),
        ];
        let sa = [
            _mm256_set1_epi32(quad(xs, 8 * c)),
            _mm256_set1_epi32(quad(xs, 8 * c + 4)),
        ];
        for (h, acc) in acc.iter_mut().enumerate() {
            let w = decode(load_half(line, h), t);
            for j in 0..2 {
                // |x| * (w * sign(x)) = w * x.
                let s = if NONNEG {
                    w[j]
                } else {
                    _mm256_sign_epi8(w[j], sa[j])
                };
                acc[j] = dot4(acc[j], ua[j], s);
            }
        }
    }
    store16(acc)
}

/// `acc[16]` of one row group of 8-bit lines; `xa`, `xs` zero-padded to 4
/// per line. `NONNEG`: no q_x is negative.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn gemv_byte<const NONNEG: bool>(lines: &[Line], xa: &[u8], xs: &[u8]) -> [i32; 16] {
    assert!(xa.len() >= 4 * lines.len() && xs.len() >= 4 * lines.len());
    // [half][line parity].
    let mut acc = [[_mm256_setzero_si256(); 2]; 2];
    for (c, line) in lines.iter().enumerate() {
        let ua = _mm256_set1_epi32(quad(xa, 4 * c));
        let sa = _mm256_set1_epi32(quad(xs, 4 * c));
        for (h, acc) in acc.iter_mut().enumerate() {
            let w = load_half(line, h);
            let s = if NONNEG { w } else { _mm256_sign_epi8(w, sa) };
            acc[c % 2] = dot4(acc[c % 2], ua, s);
        }
    }
    store16(acc)
}

/// Decodes 4-bit lines into `[k/4][16][4]` int8 rows (`out`: 128 bytes per
/// line: the low nibbles' 64, then the high nibbles').
#[target_feature(enable = "avx2,fma")]
pub(crate) fn decode_nibble(lines: &[Line], table: &[i8; 16], out: &mut [u8]) {
    assert!(out.len() >= 128 * lines.len());
    let t = load_table(table);
    for (c, line) in lines.iter().enumerate() {
        for h in 0..2 {
            let w = decode(load_half(line, h), t);
            for (j, wj) in w.into_iter().enumerate() {
                // SAFETY: 128 c + 64 j + 32 h + 32 <= 128 (c + 1) <= out.len().
                unsafe {
                    _mm256_storeu_si256(out.as_mut_ptr().add(128 * c + 64 * j + 32 * h).cast(), wj)
                };
            }
        }
    }
}

/// C[MR x NR] (+)= A B over `kq` k quads: `a` holds int8 weights at
/// `a[q * 64 + 4 i]` (row i, k 4q..4q + 4), `b` the NR column quads of
/// each k quad, `ldb` bytes apart (a packed `[q][NR][4]` panel: NR * 4;
/// `NONNEG`: no value negative), `c` rows `ldc` apart.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn ukernel<const NONNEG: bool>(
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
    assert!(b.len() >= (kq - 1) * ldb + NR * 4 && c.len() >= (MR - 1) * ldc + NR);
    let bp = b.as_ptr();
    let mut acc = [[_mm256_setzero_si256(); NV]; MR];
    for q in 0..kq {
        let mut bv = [_mm256_setzero_si256(); NV];
        for (v, b) in bv.iter_mut().enumerate() {
            // SAFETY: q ldb + 32 v + 32 <= (kq - 1) ldb + NR * 4 <= b.len().
            *b = unsafe { _mm256_loadu_si256(bp.add(q * ldb + 32 * v).cast()) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm256_set1_epi32(quad(a, q * 64 + 4 * i));
            if NONNEG {
                // x is a valid u8 operand as it is.
                for (r, &bv) in row.iter_mut().zip(&bv) {
                    *r = dot4(*r, bv, ai);
                }
            } else {
                let ua = _mm256_abs_epi8(ai);
                for (r, &bv) in row.iter_mut().zip(&bv) {
                    // |w| * (x * sign(w)) = w * x.
                    *r = dot4(*r, ua, _mm256_sign_epi8(bv, ai));
                }
            }
        }
    }
    let cp = c.as_mut_ptr();
    for (i, row) in acc.iter().enumerate() {
        for (v, &r) in row.iter().enumerate() {
            // SAFETY: i * ldc + 8 * v + 8 <= (MR - 1) * ldc + NR <= c.len().
            unsafe {
                let p = cp.add(i * ldc + 8 * v);
                let r = if acc_in {
                    _mm256_add_epi32(_mm256_loadu_si256(p.cast()), r)
                } else {
                    r
                };
                _mm256_storeu_si256(p.cast(), r);
            }
        }
    }
}
