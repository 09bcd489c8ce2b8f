//! AVX2 + FMA kernels. A 64-byte line is two ymm halves (rows 0-7 and
//! 8-15). The 16-entry codebook sits in two ymm (entries 0-7 and 8-15):
//! `vpermps` reads only the low 3 index bits, so a column decodes as two
//! permutes blended on index bit 3, which a left shift moves into the sign
//! bit `vblendvps` tests. K <= 8 skips the second permute and the blend.
//! 8-bit indices use `vgatherdps` on the 256-entry table.
//!
//! Every function here is `#[target_feature]`; callers reach them only
//! through `Isa::Avx2`, which the public entry points check with
//! `Isa::ensure_available` first.

use std::arch::x86_64::*;

use super::matrix::Line;

/// Micro-tile rows: a 16-row group is decoded into four `[k][4]` panels.
pub(super) const MR: usize = 4;
/// Micro-tile vectors along n (NR = 8 * NV columns).
pub(super) const NV: usize = 2;
/// Micro-tile columns.
pub(super) const NR: usize = 8 * NV;

/// The 8 columns of one half line (8 rows), decoded.
#[target_feature(enable = "avx2,fma")]
fn decode_half<const WIDE: bool>(v: __m256i, lo: __m256, hi: __m256) -> [__m256; 8] {
    macro_rules! col {
        ($r:literal, $l:literal) => {{
            let t = _mm256_srli_epi32::<$r>(v);
            let a = _mm256_permutevar8x32_ps(lo, t);
            if WIDE {
                let b = _mm256_permutevar8x32_ps(hi, t);
                // Nibble bit 3 -> sign bit selects the upper table.
                _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32::<$l>(v)))
            } else {
                a
            }
        }};
    }
    [
        col!(0, 28),
        col!(4, 24),
        col!(8, 20),
        col!(12, 16),
        col!(16, 12),
        col!(20, 8),
        col!(24, 4),
        col!(28, 0),
    ]
}

/// y[16] for one row group of 4-bit lines; `x` is zero-padded to 8 per line.
#[target_feature(enable = "avx2,fma")]
pub(super) fn gemv_nibble<const WIDE: bool>(lines: &[Line], table: &[f32], x: &[f32]) -> [f32; 16] {
    assert!(table.len() >= 16);
    // SAFETY: table holds at least 16 f32 (asserted).
    let (lo, hi) = unsafe {
        (
            _mm256_loadu_ps(table.as_ptr()),
            _mm256_loadu_ps(table.as_ptr().add(8)),
        )
    };
    // [half][column parity]: 4 independent FMA chains.
    let mut acc = [[_mm256_setzero_ps(); 2]; 2];
    for (line, xs) in lines.iter().zip(x.chunks_exact(8)) {
        for (h, acc) in acc.iter_mut().enumerate() {
            // SAFETY: a Line is 64 bytes, 64-byte aligned; half h is 32 of them.
            let v = unsafe { _mm256_load_si256(line.0.as_ptr().add(32 * h).cast()) };
            let w = decode_half::<WIDE>(v, lo, hi);
            for (j, wj) in w.into_iter().enumerate() {
                acc[j % 2] = _mm256_fmadd_ps(wj, _mm256_set1_ps(xs[j]), acc[j % 2]);
            }
        }
    }
    let mut out = [0.0f32; 16];
    for (h, acc) in acc.iter().enumerate() {
        // SAFETY: out has 16 f32, h * 8 + 8 <= 16.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * h), _mm256_add_ps(acc[0], acc[1])) };
    }
    out
}

/// The 4 columns of one half line (8 rows) of 8-bit indices, decoded.
#[target_feature(enable = "avx2,fma")]
fn gather_half(v: __m256i, table: &[f32]) -> [__m256; 4] {
    assert!(table.len() >= 256);
    let m = _mm256_set1_epi32(0xFF);
    let idx = [
        _mm256_and_si256(v, m),
        _mm256_and_si256(_mm256_srli_epi32::<8>(v), m),
        _mm256_and_si256(_mm256_srli_epi32::<16>(v), m),
        _mm256_srli_epi32::<24>(v),
    ];
    // SAFETY: every lane of idx is in 0..=255 and table has 256 entries.
    idx.map(|i| unsafe { _mm256_i32gather_ps::<4>(table.as_ptr(), i) })
}

/// y[16] for one row group of 8-bit lines; `x` is zero-padded to 4 per line.
#[target_feature(enable = "avx2,fma")]
pub(super) fn gemv_byte(lines: &[Line], table: &[f32], x: &[f32]) -> [f32; 16] {
    let mut acc = [[_mm256_setzero_ps(); 2]; 2];
    for (line, xs) in lines.iter().zip(x.chunks_exact(4)) {
        for (h, acc) in acc.iter_mut().enumerate() {
            // SAFETY: a Line is 64 bytes, 64-byte aligned; half h is 32 of them.
            let v = unsafe { _mm256_load_si256(line.0.as_ptr().add(32 * h).cast()) };
            for (j, wj) in gather_half(v, table).into_iter().enumerate() {
                acc[j % 2] = _mm256_fmadd_ps(wj, _mm256_set1_ps(xs[j]), acc[j % 2]);
            }
        }
    }
    let mut out = [0.0f32; 16];
    for (h, acc) in acc.iter().enumerate() {
        // SAFETY: out has 16 f32, h * 8 + 8 <= 16.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * h), _mm256_add_ps(acc[0], acc[1])) };
    }
    out
}

/// Stores rows 8h..8h+8 of column `k` into the `[k][4]` row panels 2h and
/// 2h + 1 of a group (`out` = 16 * kc values, panel p at p * 4 * kc).
#[target_feature(enable = "avx2,fma")]
fn store_half(out: &mut [f32], kc: usize, k: usize, h: usize, v: __m256) {
    assert!(k < kc && h < 2 && out.len() >= 16 * kc);
    let (p0, p1) = ((2 * h) * 4 * kc + 4 * k, (2 * h + 1) * 4 * kc + 4 * k);
    // SAFETY: p1 + 4 <= 16 * kc <= out.len() (asserted), p0 < p1.
    unsafe {
        _mm_storeu_ps(out.as_mut_ptr().add(p0), _mm256_castps256_ps128(v));
        _mm_storeu_ps(out.as_mut_ptr().add(p1), _mm256_extractf128_ps::<1>(v));
    }
}

/// Decodes 4-bit lines (8 columns each) into four `[k][MR]` f32 panels.
#[target_feature(enable = "avx2,fma")]
pub(super) fn decode_nibble(lines: &[Line], table: &[f32], out: &mut [f32]) {
    assert!(table.len() >= 16);
    let kc = 8 * lines.len();
    // SAFETY: table holds at least 16 f32 (asserted).
    let (lo, hi) = unsafe {
        (
            _mm256_loadu_ps(table.as_ptr()),
            _mm256_loadu_ps(table.as_ptr().add(8)),
        )
    };
    for (c, line) in lines.iter().enumerate() {
        for h in 0..2 {
            // SAFETY: a Line is 64 bytes, 64-byte aligned; half h is 32 of them.
            let v = unsafe { _mm256_load_si256(line.0.as_ptr().add(32 * h).cast()) };
            for (j, col) in decode_half::<true>(v, lo, hi).into_iter().enumerate() {
                store_half(out, kc, 8 * c + j, h, col);
            }
        }
    }
}

/// Decodes 8-bit lines (4 columns each) into four `[k][MR]` f32 panels.
#[target_feature(enable = "avx2,fma")]
pub(super) fn decode_byte(lines: &[Line], table: &[f32], out: &mut [f32]) {
    let kc = 4 * lines.len();
    for (c, line) in lines.iter().enumerate() {
        for h in 0..2 {
            // SAFETY: a Line is 64 bytes, 64-byte aligned; half h is 32 of them.
            let v = unsafe { _mm256_load_si256(line.0.as_ptr().add(32 * h).cast()) };
            for (j, col) in gather_half(v, table).into_iter().enumerate() {
                store_half(out, kc, 4 * c + j, h, col);
            }
        }
    }
}

/// C[MR x NR] (+)= A B over `kc`: `a` is a decoded `[k][MR]` panel,
/// `b` a packed `[k][NR]` panel, `c` rows `ldc` apart.
#[target_feature(enable = "avx2,fma")]
pub(super) fn ukernel(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, acc_in: bool) {
    assert!(a.len() >= kc * MR);
    assert!(b.len() >= kc * NR && c.len() >= (MR - 1) * ldc + NR);
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); NV]; MR];
    for k in 0..kc {
        let mut bv = [_mm256_setzero_ps(); NV];
        for (v, b) in bv.iter_mut().enumerate() {
            // SAFETY: k * NR + 8 * v + 8 <= kc * NR <= b.len() (asserted).
            *b = unsafe { _mm256_loadu_ps(bp.add(k * NR + 8 * v)) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: k * MR + i < kc * MR <= a.len() (asserted).
            let ai = _mm256_set1_ps(unsafe { *ap.add(k * MR + i) });
            for (r, b) in row.iter_mut().zip(bv) {
                *r = _mm256_fmadd_ps(ai, b, *r);
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
                    _mm256_add_ps(_mm256_loadu_ps(p), r)
                } else {
                    r
                };
                _mm256_storeu_ps(p, r);
            }
        }
    }
}

/// Dot product of two equal-length f32 slices (the f32 GEMV baseline).
#[target_feature(enable = "avx2,fma")]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (u, s) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8 * u + 8 <= n <= both lengths.
            unsafe {
                let x = _mm256_loadu_ps(ap.add(i + 8 * u));
                let y = _mm256_loadu_ps(bp.add(i + 8 * u));
                *s = _mm256_fmadd_ps(x, y, *s);
            }
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n <= both lengths.
        unsafe {
            let x = _mm256_loadu_ps(ap.add(i));
            let y = _mm256_loadu_ps(bp.add(i));
            acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
        }
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
    let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    let q = _mm_add_ss(q, _mm_shuffle_ps::<0b01>(q, q));
    let mut t = _mm_cvtss_f32(q);
    for j in i..n {
        t += a[j] * b[j];
    }
    t
}
