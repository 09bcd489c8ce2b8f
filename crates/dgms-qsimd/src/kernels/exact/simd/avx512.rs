//! AVX-512 kernels. The 16-entry codebook lives in one zmm; a `vpsrld`
//! and a `vpermps` decode one column of 16 rows (see `matrix.rs` for the
//! layout), so a 64-byte line is 8 shifts, 8 permutes and 8 FMAs with the
//! activation broadcast from memory. 8-bit indices use `vgatherdps` on
//! the 256-entry table (L1-resident).
//!
//! Every function here is `#[target_feature]`; callers reach them only
//! with a `CheckedIsa` for `Isa::Avx512`, which only `Isa::check`
//! makes.

use std::arch::x86_64::*;

use crate::kernels::layout::Line;

/// Micro-tile rows: one 16-row group, decoded into a `[k][16]` panel
/// (one zmm per k).
pub(crate) const MR: usize = 16;
/// Micro-tile columns: 12 zmm accumulators, one broadcast B value each.
pub(crate) const NR: usize = 12;

macro_rules! nibble_col {
    ($v:ident, $cb:ident, $sh:literal) => {
        _mm512_permutexvar_ps(_mm512_srli_epi32::<$sh>($v), $cb)
    };
}

/// `y[16]` for one row group of 4-bit lines; `x` is zero-padded to 8 per line.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) fn gemv_nibble(lines: &[Line], table: &[f32], x: &[f32]) -> [f32; 16] {
    assert!(table.len() >= 16);
    // SAFETY: table holds at least 16 f32 (asserted).
    let cb = unsafe { _mm512_loadu_ps(table.as_ptr()) };
    let mut acc = [_mm512_setzero_ps(); 8];
    for (line, xs) in lines.iter().zip(x.chunks_exact(8)) {
        // SAFETY: a Line is 64 bytes, 64-byte aligned.
        let v = unsafe { _mm512_load_si512(line.0.as_ptr().cast()) };
        // One accumulator per column: no FMA waits for another in a line.
        acc[0] = _mm512_fmadd_ps(nibble_col!(v, cb, 0), _mm512_set1_ps(xs[0]), acc[0]);
        acc[1] = _mm512_fmadd_ps(nibble_col!(v, cb, 4), _mm512_set1_ps(xs[1]), acc[1]);
        acc[2] = _mm512_fmadd_ps(nibble_col!(v, cb, 8), _mm512_set1_ps(xs[2]), acc[2]);
        acc[3] = _mm512_fmadd_ps(nibble_col!(v, cb, 12), _mm512_set1_ps(xs[3]), acc[3]);
        acc[4] = _mm512_fmadd_ps(nibble_col!(v, cb, 16), _mm512_set1_ps(xs[4]), acc[4]);
        acc[5] = _mm512_fmadd_ps(nibble_col!(v, cb, 20), _mm512_set1_ps(xs[5]), acc[5]);
        acc[6] = _mm512_fmadd_ps(nibble_col!(v, cb, 24), _mm512_set1_ps(xs[6]), acc[6]);
        acc[7] = _mm512_fmadd_ps(nibble_col!(v, cb, 28), _mm512_set1_ps(xs[7]), acc[7]);
    }
    reduce8(acc)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn reduce8(acc: [__m512; 8]) -> [f32; 16] {
    let s01 = _mm512_add_ps(acc[0], acc[1]);
    let s23 = _mm512_add_ps(acc[2], acc[3]);
    let s45 = _mm512_add_ps(acc[4], acc[5]);
    let s67 = _mm512_add_ps(acc[6], acc[7]);
    let s = _mm512_add_ps(_mm512_add_ps(s01, s23), _mm512_add_ps(s45, s67));
    let mut out = [0.0f32; 16];
    // SAFETY: out is 16 f32.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), s) };
    out
}

/// Byte `J` of every dword of `v`, looked up in the 256-entry table.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn gather_byte<const SH: u32>(v: __m512i, table: &[f32]) -> __m512 {
    assert!(table.len() >= 256);
    let idx = _mm512_and_si512(_mm512_srli_epi32::<SH>(v), _mm512_set1_epi32(0xFF));
    // SAFETY: every lane of idx is in 0..=255 and table has 256 entries.
    unsafe { _mm512_i32gather_ps::<4>(idx, table.as_ptr()) }
}

/// `y[16]` for one row group of 8-bit lines; `x` is zero-padded to 4 per line.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) fn gemv_byte(lines: &[Line], table: &[f32], x: &[f32]) -> [f32; 16] {
    let mut acc = [_mm512_setzero_ps(); 8];
    for (pair, xs) in lines.chunks(2).zip(x.chunks(8)) {
        for (h, (line, xh)) in pair.iter().zip(xs.chunks_exact(4)).enumerate() {
            // SAFETY: a Line is 64 bytes, 64-byte aligned.
            let v = unsafe { _mm512_load_si512(line.0.as_ptr().cast()) };
            let a = &mut acc[4 * h..4 * h + 4];
            a[0] = _mm512_fmadd_ps(gather_byte::<0>(v, table), _mm512_set1_ps(xh[0]), a[0]);
            a[1] = _mm512_fmadd_ps(gather_byte::<8>(v, table), _mm512_set1_ps(xh[1]), a[1]);
            a[2] = _mm512_fmadd_ps(gather_byte::<16>(v, table), _mm512_set1_ps(xh[2]), a[2]);
            a[3] = _mm512_fmadd_ps(gather_byte::<24>(v, table), _mm512_set1_ps(xh[3]), a[3]);
        }
    }
    reduce8(acc)
}

/// Stores the 16 decoded rows of column `k` into a `[k][16]` group panel.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn store_col(out: &mut [f32], k: usize, v: __m512) {
    assert!(out.len() >= 16 * k + 16);
    // SAFETY: 16 * k + 16 <= out.len() (asserted).
    unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * k), v) };
}

/// Decodes 4-bit lines (8 columns each) into a `[k][16]` f32 panel.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) fn decode_nibble(lines: &[Line], table: &[f32], out: &mut [f32]) {
    assert!(table.len() >= 16);
    // SAFETY: table holds at least 16 f32 (asserted).
    let cb = unsafe { _mm512_loadu_ps(table.as_ptr()) };
    for (c, line) in lines.iter().enumerate() {
        // SAFETY: a Line is 64 bytes, 64-byte aligned.
        let v = unsafe { _mm512_load_si512(line.0.as_ptr().cast()) };
        let cols = [
            nibble_col!(v, cb, 0),
            nibble_col!(v, cb, 4),
            nibble_col!(v, cb, 8),
            nibble_col!(v, cb, 12),
            nibble_col!(v, cb, 16),
            nibble_col!(v, cb, 20),
            nibble_col!(v, cb, 24),
            nibble_col!(v, cb, 28),
        ];
        for (j, col) in cols.into_iter().enumerate() {
            store_col(out, 8 * c + j, col);
        }
    }
}

/// Decodes 8-bit lines (4 columns each) into a `[k][16]` f32 panel.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) fn decode_byte(lines: &[Line], table: &[f32], out: &mut [f32]) {
    for (c, line) in lines.iter().enumerate() {
        // SAFETY: a Line is 64 bytes, 64-byte aligned.
        let v = unsafe { _mm512_load_si512(line.0.as_ptr().cast()) };
        let cols = [
            gather_byte::<0>(v, table),
            gather_byte::<8>(v, table),
            gather_byte::<16>(v, table),
            gather_byte::<24>(v, table),
        ];
        for (j, col) in cols.into_iter().enumerate() {
            store_col(out, 4 * c + j, col);
        }
    }
}

/// The transposed tile C^T[NR x 16] (+)= (A B)^T over `kc`: `a` is a
/// decoded `[k][16]` group panel, `b` a packed `[k][NR]` panel, and column
/// j of the tile (16 rows) is `c[j * ldc..j * ldc + 16]`. Per k: one A
/// load, NR broadcasts, NR FMAs.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) fn ukernel(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, acc_in: bool) {
    assert!(a.len() >= kc * MR);
    assert!(b.len() >= kc * NR && c.len() >= (NR - 1) * ldc + MR);
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); NR];
    for k in 0..kc {
        // SAFETY: k * MR + 16 <= kc * MR <= a.len() (asserted).
        let ak = unsafe { _mm512_loadu_ps(ap.add(k * MR)) };
        for (j, cj) in acc.iter_mut().enumerate() {
            // SAFETY: k * NR + j < kc * NR <= b.len() (asserted).
            let bj = _mm512_set1_ps(unsafe { *bp.add(k * NR + j) });
            *cj = _mm512_fmadd_ps(ak, bj, *cj);
        }
    }
    let cp = c.as_mut_ptr();
    for (j, &r) in acc.iter().enumerate() {
        // SAFETY: j * ldc + 16 <= (NR - 1) * ldc + MR <= c.len().
        unsafe {
            let p = cp.add(j * ldc);
            let r = if acc_in {
                _mm512_add_ps(_mm512_loadu_ps(p), r)
            } else {
                r
            };
            _mm512_storeu_ps(p, r);
        }
    }
}

/// Dot product of two equal-length f32 slices (the f32 GEMV baseline).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (u, s) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16 * u + 16 <= n <= both lengths.
            unsafe {
                let x = _mm512_loadu_ps(ap.add(i + 16 * u));
                let y = _mm512_loadu_ps(bp.add(i + 16 * u));
                *s = _mm512_fmadd_ps(x, y, *s);
            }
        }
        i += 64;
    }
    while i + 16 <= n {
        // SAFETY: i + 16 <= n <= both lengths.
        unsafe {
            let x = _mm512_loadu_ps(ap.add(i));
            let y = _mm512_loadu_ps(bp.add(i));
            acc[0] = _mm512_fmadd_ps(x, y, acc[0]);
        }
        i += 16;
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    let mut t = _mm512_reduce_add_ps(s);
    for j in i..n {
        t += a[j] * b[j];
    }
    t
}
