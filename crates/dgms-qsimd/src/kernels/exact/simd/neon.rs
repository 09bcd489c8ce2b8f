//! NEON kernels. `vld4q_u8` de-interleaves a 64-byte line by byte position,
//! which hands over the indices of two columns for all 16 rows as bytes
//! (low and high nibble). The codebook is split into 4 byte planes;
//! 4 `vqtbl1q_u8` lookups and two rounds of zips rebuild 16 f32 lanes.
//! 8-bit indices are decoded through the table one by one (slow path).
//!
//! Every function here is `#[target_feature(enable = "neon")]`; callers
//! reach them only with a `CheckedIsa` for `Isa::Neon`, which only
//! `Isa::check` makes.

use std::arch::aarch64::*;

use crate::kernels::layout::Line;

/// Micro-tile rows: one 16-row group, decoded into a `[k][16]` panel
/// (four q registers per k).
pub(crate) const MR: usize = 16;
/// Micro-tile columns: 4 x 4 = 16 accumulators, 4 A vectors and one B
/// vector whose lanes the FMAs index.
pub(crate) const NR: usize = 4;

/// The 4 byte planes of a 16-entry table.
#[target_feature(enable = "neon")]
fn planes(table: &[f32]) -> [uint8x16_t; 4] {
    let mut p = [[0u8; 16]; 4];
    for (i, v) in table.iter().take(16).enumerate() {
        for (b, plane) in v.to_bits().to_le_bytes().into_iter().zip(p.iter_mut()) {
            plane[i] = b;
        }
    }
    // SAFETY: each plane is 16 bytes.
    p.map(|q| unsafe { vld1q_u8(q.as_ptr()) })
}

/// 16 indices (0..16, one per byte, rows in order) -> 16 f32 in 4 vectors.
#[target_feature(enable = "neon")]
fn decode16(idx: uint8x16_t, p: &[uint8x16_t; 4]) -> [float32x4_t; 4] {
    let b0 = vqtbl1q_u8(p[0], idx);
    let b1 = vqtbl1q_u8(p[1], idx);
    let b2 = vqtbl1q_u8(p[2], idx);
    let b3 = vqtbl1q_u8(p[3], idx);
    let l01 = vreinterpretq_u16_u8(vzip1q_u8(b0, b1));
    let h01 = vreinterpretq_u16_u8(vzip2q_u8(b0, b1));
    let l23 = vreinterpretq_u16_u8(vzip1q_u8(b2, b3));
    let h23 = vreinterpretq_u16_u8(vzip2q_u8(b2, b3));
    [
        vreinterpretq_f32_u16(vzip1q_u16(l01, l23)),
        vreinterpretq_f32_u16(vzip2q_u16(l01, l23)),
        vreinterpretq_f32_u16(vzip1q_u16(h01, h23)),
        vreinterpretq_f32_u16(vzip2q_u16(h01, h23)),
    ]
}

/// The 8 columns of a 4-bit line as 16-row byte-index vectors.
#[target_feature(enable = "neon")]
fn nibble_cols(line: &Line) -> [uint8x16_t; 8] {
    // SAFETY: a Line is 64 readable bytes.
    let r = unsafe { vld4q_u8(line.0.as_ptr()) };
    let m = vdupq_n_u8(0x0F);
    [
        vandq_u8(r.0, m),
        vshrq_n_u8::<4>(r.0),
        vandq_u8(r.1, m),
        vshrq_n_u8::<4>(r.1),
        vandq_u8(r.2, m),
        vshrq_n_u8::<4>(r.2),
        vandq_u8(r.3, m),
        vshrq_n_u8::<4>(r.3),
    ]
}

/// The 4 columns of an 8-bit line, decoded through the table.
#[target_feature(enable = "neon")]
fn byte_cols(line: &Line, table: &[f32]) -> [[float32x4_t; 4]; 4] {
    let mut w = [[0.0f32; 16]; 4];
    for (l, d) in line.0.chunks_exact(4).enumerate() {
        for (j, &i) in d.iter().enumerate() {
            w[j][l] = table[usize::from(i)];
        }
    }
    // SAFETY: each w[j] is 16 f32, q * 4 + 4 <= 16.
    w.map(|c| [0, 1, 2, 3].map(|q| unsafe { vld1q_f32(c.as_ptr().add(4 * q)) }))
}

#[target_feature(enable = "neon")]
fn store16(acc: &[[float32x4_t; 4]; 2]) -> [f32; 16] {
    let mut out = [0.0f32; 16];
    for q in 0..4 {
        // SAFETY: out has 16 f32, 4 * q + 4 <= 16.
        unsafe { vst1q_f32(out.as_mut_ptr().add(4 * q), vaddq_f32(acc[0][q], acc[1][q])) };
    }
    out
}

/// `y[16]` for one row group of 4-bit lines; `x` is zero-padded to 8 per line.
#[target_feature(enable = "neon")]
pub(crate) fn gemv_nibble(lines: &[Line], table: &[f32], x: &[f32]) -> [f32; 16] {
    let p = planes(table);
    // [column parity][row quarter]: two independent chains per lane.
    let mut acc = [[vdupq_n_f32(0.0); 4]; 2];
    for (line, xs) in lines.iter().zip(x.chunks_exact(8)) {
        for (j, idx) in nibble_cols(line).into_iter().enumerate() {
            let w = decode16(idx, &p);
            for (a, wq) in acc[j % 2].iter_mut().zip(w) {
                *a = vfmaq_n_f32(*a, wq, xs[j]);
            }
        }
    }
    store16(&acc)
}

/// `y[16]` for one row group of 8-bit lines; `x` is zero-padded to 4 per line.
#[target_feature(enable = "neon")]
pub(crate) fn gemv_byte(lines: &[Line], table: &[f32], x: &[f32]) -> [f32; 16] {
    let mut acc = [[vdupq_n_f32(0.0); 4]; 2];
    for (line, xs) in lines.iter().zip(x.chunks_exact(4)) {
        for (j, w) in byte_cols(line, table).into_iter().enumerate() {
            for (a, wq) in acc[j % 2].iter_mut().zip(w) {
                *a = vfmaq_n_f32(*a, wq, xs[j]);
            }
        }
    }
    store16(&acc)
}

/// Stores the 16 decoded rows of column `k` into a `[k][16]` group panel.
#[target_feature(enable = "neon")]
fn store_col(out: &mut [f32], k: usize, w: [float32x4_t; 4]) {
    assert!(out.len() >= 16 * k + 16);
    for (q, wq) in w.into_iter().enumerate() {
        // SAFETY: 16 * k + 4 * q + 4 <= 16 * k + 16 <= out.len() (asserted).
        unsafe { vst1q_f32(out.as_mut_ptr().add(16 * k + 4 * q), wq) };
    }
}

/// Decodes 4-bit lines (8 columns each) into a `[k][16]` f32 panel.
#[target_feature(enable = "neon")]
pub(crate) fn decode_nibble(lines: &[Line], table: &[f32], out: &mut [f32]) {
    let p = planes(table);
    for (c, line) in lines.iter().enumerate() {
        for (j, idx) in nibble_cols(line).into_iter().enumerate() {
            store_col(out, 8 * c + j, decode16(idx, &p));
        }
    }
}

/// Decodes 8-bit lines (4 columns each) into a `[k][16]` f32 panel.
#[target_feature(enable = "neon")]
pub(crate) fn decode_byte(lines: &[Line], table: &[f32], out: &mut [f32]) {
    for (c, line) in lines.iter().enumerate() {
        for (j, w) in byte_cols(line, table).into_iter().enumerate() {
            store_col(out, 4 * c + j, w);
        }
    }
}

/// The transposed tile C^T[NR x 16] (+)= (A B)^T over `kc`: `a` is a
/// decoded `[k][16]` group panel, `b` a packed `[k][NR]` panel, and column
/// j of the tile (16 rows) is `c[j * ldc..j * ldc + 16]`. Per k: four A
/// loads, one B load, 16 lane-indexed FMAs.
#[target_feature(enable = "neon")]
pub(crate) fn ukernel(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, acc_in: bool) {
    assert!(a.len() >= kc * MR);
    assert!(b.len() >= kc * NR && c.len() >= (NR - 1) * ldc + MR);
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    // acc[j][q]: column j, rows 4q..4q + 4.
    let mut acc = [[vdupq_n_f32(0.0); 4]; NR];
    for k in 0..kc {
        // SAFETY: k * NR + 4 <= kc * NR <= b.len() (asserted).
        let bv = unsafe { vld1q_f32(bp.add(k * NR)) };
        // SAFETY: k * MR + 4 * q + 4 <= kc * MR <= a.len() (asserted).
        let av: [float32x4_t; 4] =
            std::array::from_fn(|q| unsafe { vld1q_f32(ap.add(k * MR + 4 * q)) });
        for (q, aq) in av.into_iter().enumerate() {
            acc[0][q] = vfmaq_laneq_f32::<0>(acc[0][q], aq, bv);
            acc[1][q] = vfmaq_laneq_f32::<1>(acc[1][q], aq, bv);
            acc[2][q] = vfmaq_laneq_f32::<2>(acc[2][q], aq, bv);
            acc[3][q] = vfmaq_laneq_f32::<3>(acc[3][q], aq, bv);
        }
    }
    let cp = c.as_mut_ptr();
    for (j, cj) in acc.iter().enumerate() {
        for (q, &r) in cj.iter().enumerate() {
            // SAFETY: j * ldc + 4 * q + 4 <= (NR - 1) * ldc + MR <= c.len().
            unsafe {
                let p = cp.add(j * ldc + 4 * q);
                let r = if acc_in {
                    vaddq_f32(vld1q_f32(p), r)
                } else {
                    r
                };
                vst1q_f32(p, r);
            }
        }
    }
}

/// Dot product of two equal-length f32 slices (the f32 GEMV baseline).
#[target_feature(enable = "neon")]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (u, s) in acc.iter_mut().enumerate() {
            // SAFETY: i + 4 * u + 4 <= n <= both lengths.
            unsafe {
                *s = vfmaq_f32(
                    *s,
                    vld1q_f32(ap.add(i + 4 * u)),
                    vld1q_f32(bp.add(i + 4 * u)),
                )
            };
        }
        i += 16;
    }
    let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    let mut t = vaddvq_f32(s);
    for j in i..n {
        t += a[j] * b[j];
    }
    t
}
