//! AVX2 + FMA kernels. A 64-byte line is two ymm halves (rows 0-7 and
//! 8-15). The 16-entry codebook sits in two ymm (entries 0-7 and 8-15):
//! `vpermps` reads only the low 3 index bits, so a column decodes as two
//! permutes blended on index bit 3, which a left shift moves into the sign
//! bit `vblendvps` tests. K <= 8 skips the second permute and the blend.
//! 8-bit indices use `vgatherdps` on the 256-entry table. The 4-bit GEMV,
//! where decoding is the whole cost, decodes by byte planes and `vpshufb`
//! instead (see [`gemv_nibble`]).
//!
//! Every function here is `#[target_feature]`; callers reach them only
//! with a `CheckedIsa` for `Isa::Avx2` or `Isa::Avx512` (whose check
//! includes AVX2 and FMA), which only `Isa::check` makes.

use std::arch::x86_64::*;

use crate::kernels::layout::Line;

/// Micro-tile rows: one 16-row group, decoded into a `[k][16]` panel
/// (two ymm per k: rows 0-7 and 8-15).
pub(crate) const MR: usize = 16;
/// Micro-tile columns: 2 x 6 = 12 accumulators, 2 A vectors and one
/// broadcast B value fill 15 of the 16 ymm registers.
pub(crate) const NR: usize = 6;

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

/// Activations rearranged for [`gemv_nibble`]: per line of 8 columns,
/// `[x0 x2 x4 x6 x0 x2 x4 x6 x1 x3 x5 x7 x1 x3 x5 x7]` (the order in which
/// the byte-plane decode yields a row's low and high nibbles, once per
/// 128-bit lane); `x` is zero-padded to whole lines.
pub(crate) fn nibble_activations(x: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(2 * x.len());
    for xs in x.chunks_exact(8) {
        let even = [xs[0], xs[2], xs[4], xs[6]];
        let odd = [xs[1], xs[3], xs[5], xs[7]];
        for part in [even, even, odd, odd] {
            out.extend_from_slice(&part);
        }
    }
    out
}

/// `y[16]` for one row group of 4-bit lines, `xeo` from
/// [`nibble_activations`].
///
/// Byte-plane decode (no `vpermps`): byte b of every codebook entry forms
/// a 16-byte table that one `vpshufb` indexes with 32 nibbles at once;
/// two rounds of byte and word interleaving of the 4 planes rebuild the
/// f32 values exactly. In a half line (8 rows, row r in dword r) that
/// yields, per 128-bit lane, the even (low nibble) or odd (high nibble)
/// columns of one row, so the accumulators hold 4 partial sums per row,
/// added at the end; activations come as vectors, never broadcast. About
/// 3.4 shuffle or logic ops per 8 weights against 6 for the permute and
/// blend decode.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn gemv_nibble(lines: &[Line], table: &[f32], xeo: &[f32]) -> [f32; 16] {
    assert!(table.len() >= 16 && xeo.len() >= 16 * lines.len());
    let mut bytes = [[0u8; 16]; 4];
    for (i, v) in table[..16].iter().enumerate() {
        for (b, plane) in v.to_bits().to_le_bytes().into_iter().zip(&mut bytes) {
            plane[i] = b;
        }
    }
    // SAFETY: each plane is 16 bytes.
    let planes =
        bytes.map(|p| unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(p.as_ptr().cast())) });
    let low4 = _mm256_set1_epi8(0x0F);
    // acc[h][k]: rows 8h + k (low lane) and 8h + k + 4 (high lane).
    let mut acc = [[_mm256_setzero_ps(); 4]; 2];
    for (line, xs) in lines.iter().zip(xeo.chunks_exact(16)) {
        // SAFETY: xs holds 16 f32.
        let (xe, xo) = unsafe {
            (
                _mm256_loadu_ps(xs.as_ptr()),
                _mm256_loadu_ps(xs.as_ptr().add(8)),
            )
        };
        for (h, acc) in acc.iter_mut().enumerate() {
            // SAFETY: a Line is 64 bytes, 64-byte aligned; half h is 32 of them.
            let v = unsafe { _mm256_load_si256(line.0.as_ptr().add(32 * h).cast()) };
            let lo = _mm256_and_si256(v, low4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low4);
            for (nib, x) in [(lo, xe), (hi, xo)] {
                let p = planes.map(|t| _mm256_shuffle_epi8(t, nib));
                let (a, b) = (
                    _mm256_unpacklo_epi8(p[0], p[1]),
                    _mm256_unpackhi_epi8(p[0], p[1]),
                );
                let (c, d) = (
                    _mm256_unpacklo_epi8(p[2], p[3]),
                    _mm256_unpackhi_epi8(p[2], p[3]),
                );
                let w = [
                    _mm256_unpacklo_epi16(a, c),
                    _mm256_unpackhi_epi16(a, c),
                    _mm256_unpacklo_epi16(b, d),
                    _mm256_unpackhi_epi16(b, d),
                ];
                for (acc, w) in acc.iter_mut().zip(w) {
                    *acc = _mm256_fmadd_ps(_mm256_castsi256_ps(w), x, *acc);
                }
            }
        }
    }
    let mut out = [0.0f32; 16];
    for (h, acc) in acc.iter().enumerate() {
        for (k, a) in acc.iter().enumerate() {
            let mut v = [0.0f32; 8];
            // SAFETY: v holds 8 f32.
            unsafe { _mm256_storeu_ps(v.as_mut_ptr(), *a) };
            out[8 * h + k] = (v[0] + v[1]) + (v[2] + v[3]);
            out[8 * h + k + 4] = (v[4] + v[5]) + (v[6] + v[7]);
        }
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

/// `y[16]` for one row group of 8-bit lines; `x` is zero-padded to 4 per line.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn gemv_byte(lines: &[Line], table: &[f32], x: &[f32]) -> [f32; 16] {
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

/// Stores rows 8h..8h+8 of column `k` into a `[k][16]` group panel.
#[target_feature(enable = "avx2,fma")]
fn store_half(out: &mut [f32], k: usize, h: usize, v: __m256) {
    assert!(h < 2 && out.len() >= 16 * k + 8 * h + 8);
    // SAFETY: 16 * k + 8 * h + 8 <= out.len() (asserted).
    unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(16 * k + 8 * h), v) };
}

/// Decodes 4-bit lines (8 columns each) into a `[k][16]` f32 panel.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn decode_nibble(lines: &[Line], table: &[f32], out: &mut [f32]) {
    assert!(table.len() >= 16);
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
                store_half(out, 8 * c + j, h, col);
            }
        }
    }
}

/// Decodes 8-bit lines (4 columns each) into a `[k][16]` f32 panel.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn decode_byte(lines: &[Line], table: &[f32], out: &mut [f32]) {
    for (c, line) in lines.iter().enumerate() {
        for h in 0..2 {
            // SAFETY: a Line is 64 bytes, 64-byte aligned; half h is 32 of them.
            let v = unsafe { _mm256_load_si256(line.0.as_ptr().add(32 * h).cast()) };
            for (j, col) in gather_half(v, table).into_iter().enumerate() {
                store_half(out, 4 * c + j, h, col);
            }
        }
    }
}

/// The transposed tile C^T[N x 16] (+)= (A B)^T over `kc`: `a` is a
/// decoded `[k][16]` group panel, `b` a packed `[k][NR]` panel of which
/// the first N <= NR columns are used, and column j of the tile (16 rows)
/// is `c[j * ldc..j * ldc + 16]`. Per k: two A loads, N broadcasts, 2 N
/// FMAs.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn ukernel<const N: usize>(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    acc_in: bool,
) {
    const { assert!(N >= 1 && N <= NR) };
    assert!(a.len() >= kc * MR);
    assert!(b.len() >= kc * NR && c.len() >= (N - 1) * ldc + MR);
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    for k in 0..kc {
        // SAFETY: k * MR + 16 <= kc * MR <= a.len() (asserted).
        let (a0, a1) = unsafe {
            (
                _mm256_loadu_ps(ap.add(k * MR)),
                _mm256_loadu_ps(ap.add(k * MR + 8)),
            )
        };
        for (j, cj) in acc.iter_mut().enumerate() {
            // SAFETY: k * NR + j < kc * NR <= b.len() (asserted), j < N <= NR.
            let bj = _mm256_broadcast_ss(unsafe { &*bp.add(k * NR + j) });
            cj[0] = _mm256_fmadd_ps(a0, bj, cj[0]);
            cj[1] = _mm256_fmadd_ps(a1, bj, cj[1]);
        }
    }
    let cp = c.as_mut_ptr();
    for (j, cj) in acc.iter().enumerate() {
        for (h, &r) in cj.iter().enumerate() {
            // SAFETY: j * ldc + 8 * h + 8 <= (N - 1) * ldc + MR <= c.len().
            unsafe {
                let p = cp.add(j * ldc + 8 * h);
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

/// The 8 x 8 transpose: lane j of output i is lane i of input j.
#[target_feature(enable = "avx2,fma")]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let u = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    [
        _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
        _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
        _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
        _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
        _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
        _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
        _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
        _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
    ]
}

/// Transposes a 16-row x 8-column block out of a C^T buffer: column i
/// is `c[i * ldc..i * ldc + 16]`; row l goes to `out[l * ldo..l * ldo + 8]`.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn transpose_16x8(c: &[f32], ldc: usize, out: &mut [f32], ldo: usize) {
    assert!(c.len() >= 7 * ldc + 16 && out.len() >= 15 * ldo + 8);
    let (cp, op) = (c.as_ptr(), out.as_mut_ptr());
    for h in 0..2 {
        // SAFETY: i * ldc + 8 * h + 8 <= 7 * ldc + 16 <= c.len() (asserted).
        let r: [__m256; 8] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(cp.add(i * ldc + 8 * h)) });
        for (l, v) in transpose8(r).into_iter().enumerate() {
            // SAFETY: (8 * h + l) * ldo + 8 <= 15 * ldo + 8 <= out.len().
            unsafe { _mm256_storeu_ps(op.add((8 * h + l) * ldo), v) };
        }
    }
}

/// Packs 16 rows of an f32 matrix (each `rows[l]`, all of one length
/// `kv`, or empty for a row beyond the matrix: zeros) into a `[k][16]`
/// panel `out`, 8 k at a time through 8 x 8 transposes.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn pack_rows(rows: &[&[f32]; 16], kv: usize, out: &mut [f32]) {
    assert!(out.len() >= 16 * kv);
    assert!(rows.iter().all(|r| r.is_empty() || r.len() == kv));
    let op = out.as_mut_ptr();
    let k8 = kv / 8 * 8;
    for k in (0..k8).step_by(8) {
        for h in 0..2 {
            let r: [__m256; 8] = std::array::from_fn(|i| match rows[8 * h + i] {
                [] => _mm256_setzero_ps(),
                // SAFETY: k + 8 <= k8 <= kv = row.len() (asserted).
                row => unsafe { _mm256_loadu_ps(row.as_ptr().add(k)) },
            });
            for (kk, v) in transpose8(r).into_iter().enumerate() {
                // SAFETY: (k + kk) * 16 + 8 * h + 8 <= 16 * kv <= out.len().
                unsafe { _mm256_storeu_ps(op.add((k + kk) * 16 + 8 * h), v) };
            }
        }
    }
    for k in k8..kv {
        for (l, row) in rows.iter().enumerate() {
            out[k * 16 + l] = row.get(k).copied().unwrap_or(0.0);
        }
    }
}

/// Dot product of two equal-length f32 slices (the f32 GEMV baseline).
#[target_feature(enable = "avx2,fma")]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
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
