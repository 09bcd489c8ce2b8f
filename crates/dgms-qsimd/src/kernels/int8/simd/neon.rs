//! NEON int8 kernels. A 64-byte line is four q registers of 4 rows each
//! (one dword per row). 4-bit lines decode with one `tbl` on the 16-entry
//! int8 table per 16 weights. Products are signed x signed:
//! - with the dot-product extension, `sdot` (4 products into each i32
//!   lane) through `asm!` (its intrinsic is not stable Rust yet);
//! - otherwise `smull` (i8 x i8 -> i16, at most 127^2) and `sadalp`
//!   (pairwise add into i32): each i32 lane holds half of a 4-byte group,
//!   and one final `addp` joins the halves.
//!
//! Every function here is `#[target_feature]`; callers reach them only
//! with the `Kern` chosen from a `CheckedIsa` for `Isa::Neon`, the
//! `dotprod` ones only when `Kern::select` detected it.

use std::arch::aarch64::*;
use std::arch::asm;

use crate::kernels::layout::Line;

/// Micro-tile rows.
pub(crate) const MR: usize = 4;
/// Micro-tile vectors along n (4 columns each).
const NV: usize = 2;
/// Micro-tile columns.
pub(crate) const NR: usize = 4 * NV;

/// The 4 bytes at `s[i..i + 4]` as one dword (to broadcast): one
/// bounds check and one load, not four.
#[inline(always)]
fn quad(s: &[u8], i: usize) -> i32 {
    let b: [u8; 4] = s[i..i + 4].try_into().unwrap_or_default();
    i32::from_le_bytes(b)
}

#[target_feature(enable = "neon")]
fn dup(d: i32) -> int8x16_t {
    vreinterpretq_s8_s32(vdupq_n_s32(d))
}

/// acc += the 4-byte dot products of `a` and `b` in each i32 lane.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: sdot reads the two source registers and updates `acc` only;
    // this function has dotprod enabled and runs only after detection.
    unsafe {
        asm!(
            "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
            inout(vreg) acc,
            in(vreg) a,
            in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// lo / hi += pairwise sums of the products of the low / high 8 bytes.
#[target_feature(enable = "neon")]
fn mull_acc(lo: &mut int32x4_t, hi: &mut int32x4_t, a: int8x16_t, b: int8x16_t) {
    *lo = vpadalq_s16(*lo, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    *hi = vpadalq_s16(*hi, vmull_high_s8(a, b));
}

#[target_feature(enable = "neon")]
fn load_table(table: &[i8; 16]) -> int8x16_t {
    // SAFETY: table is 16 readable bytes.
    unsafe { vld1q_s8(table.as_ptr()) }
}

/// Rows 4m..4m + 4 of a line.
#[target_feature(enable = "neon")]
fn load_quarter(line: &Line, m: usize) -> uint8x16_t {
    assert!(m < 4);
    // SAFETY: a Line is 64 bytes; quarter m is 16 of them.
    unsafe { vld1q_u8(line.0.as_ptr().add(16 * m)) }
}

/// The int8 weights of the low (columns 0-3) and high (4-7) nibbles.
#[target_feature(enable = "neon")]
fn decode(v: uint8x16_t, table: int8x16_t) -> [int8x16_t; 2] {
    [
        vqtbl1q_s8(table, vandq_u8(v, vdupq_n_u8(0x0F))),
        vqtbl1q_s8(table, vshrq_n_u8::<4>(v)),
    ]
}

#[target_feature(enable = "neon")]
fn store16(acc: [int32x4_t; 4]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (m, a) in acc.into_iter().enumerate() {
        // SAFETY: out has 16 i32, 4 * m + 4 <= 16.
        unsafe { vst1q_s32(out.as_mut_ptr().add(4 * m), a) };
    }
    out
}

/// `acc[16]` of one row group of 4-bit lines; `xs` = q_x, padded to 8 per
/// line.
#[target_feature(enable = "neon")]
pub(crate) fn gemv_nibble(lines: &[Line], table: &[i8; 16], xs: &[u8]) -> [i32; 16] {
    assert!(xs.len() >= 8 * lines.len());
    let t = load_table(table);
    let (mut lo, mut hi) = ([vdupq_n_s32(0); 4], [vdupq_n_s32(0); 4]);
    for (c, line) in lines.iter().enumerate() {
        let x = [dup(quad(xs, 8 * c)), dup(quad(xs, 8 * c + 4))];
        for m in 0..4 {
            let w = decode(load_quarter(line, m), t);
            mull_acc(&mut lo[m], &mut hi[m], w[0], x[0]);
            mull_acc(&mut lo[m], &mut hi[m], w[1], x[1]);
        }
    }
    store16([0, 1, 2, 3].map(|m| vpaddq_s32(lo[m], hi[m])))
}

/// [`gemv_nibble`] with `sdot`.
#[target_feature(enable = "neon,dotprod")]
pub(crate) fn gemv_nibble_dot(lines: &[Line], table: &[i8; 16], xs: &[u8]) -> [i32; 16] {
    assert!(xs.len() >= 8 * lines.len());
    let t = load_table(table);
    // [nibble][quarter]: 8 independent chains.
    let mut acc = [[vdupq_n_s32(0); 4]; 2];
    for (c, line) in lines.iter().enumerate() {
        let x = [dup(quad(xs, 8 * c)), dup(quad(xs, 8 * c + 4))];
        for m in 0..4 {
            let w = decode(load_quarter(line, m), t);
            acc[0][m] = sdot(acc[0][m], w[0], x[0]);
            acc[1][m] = sdot(acc[1][m], w[1], x[1]);
        }
    }
    store16([0, 1, 2, 3].map(|m| vaddq_s32(acc[0][m], acc[1][m])))
}

/// `acc[16]` of one row group of 8-bit lines; `xs` padded to 4 per line.
#[target_feature(enable = "neon")]
pub(crate) fn gemv_byte(lines: &[Line], xs: &[u8]) -> [i32; 16] {
    assert!(xs.len() >= 4 * lines.len());
    let (mut lo, mut hi) = ([vdupq_n_s32(0); 4], [vdupq_n_s32(0); 4]);
    for (c, line) in lines.iter().enumerate() {
        let x = dup(quad(xs, 4 * c));
        for m in 0..4 {
            let w = vreinterpretq_s8_u8(load_quarter(line, m));
            mull_acc(&mut lo[m], &mut hi[m], w, x);
        }
    }
    store16([0, 1, 2, 3].map(|m| vpaddq_s32(lo[m], hi[m])))
}

/// [`gemv_byte`] with `sdot`.
#[target_feature(enable = "neon,dotprod")]
pub(crate) fn gemv_byte_dot(lines: &[Line], xs: &[u8]) -> [i32; 16] {
    assert!(xs.len() >= 4 * lines.len());
    let mut acc = [vdupq_n_s32(0); 4];
    for (c, line) in lines.iter().enumerate() {
        let x = dup(quad(xs, 4 * c));
        for (m, a) in acc.iter_mut().enumerate() {
            *a = sdot(*a, vreinterpretq_s8_u8(load_quarter(line, m)), x);
        }
    }
    store16(acc)
}

/// Decodes 4-bit lines into `[k/4][16][4]` int8 rows (`out`: 128 bytes per
/// line: the low nibbles' 64, then the high nibbles').
#[target_feature(enable = "neon")]
pub(crate) fn decode_nibble(lines: &[Line], table: &[i8; 16], out: &mut [u8]) {
    assert!(out.len() >= 128 * lines.len());
    let t = load_table(table);
    let op = out.as_mut_ptr().cast::<i8>();
    for (c, line) in lines.iter().enumerate() {
        for m in 0..4 {
            let w = decode(load_quarter(line, m), t);
            // SAFETY: 128 c + 64 + 16 m + 16 <= 128 (c + 1) <= out.len().
            unsafe {
                vst1q_s8(op.add(128 * c + 16 * m), w[0]);
                vst1q_s8(op.add(128 * c + 64 + 16 * m), w[1]);
            }
        }
    }
}

/// The NV vectors of the NR column quads at byte `at` of `b`.
#[target_feature(enable = "neon")]
fn load_b(b: &[u8], at: usize) -> [int8x16_t; NV] {
    assert!(b.len() >= at + NR * 4);
    let bp = b.as_ptr().cast::<i8>();
    let mut bv = [vdupq_n_s8(0); NV];
    for (v, out) in bv.iter_mut().enumerate() {
        // SAFETY: at + 16 v + 16 <= at + NR * 4 <= b.len().
        *out = unsafe { vld1q_s8(bp.add(at + 16 * v)) };
    }
    bv
}

/// Stores (or adds) the MR x NR accumulators into `c`, rows `ldc` apart.
#[target_feature(enable = "neon")]
fn store_tile(acc: &[[int32x4_t; NV]; MR], c: &mut [i32], ldc: usize, acc_in: bool) {
    assert!(c.len() >= (MR - 1) * ldc + NR);
    let cp = c.as_mut_ptr();
    for (i, row) in acc.iter().enumerate() {
        for (v, &r) in row.iter().enumerate() {
            // SAFETY: i * ldc + 4 * v + 4 <= (MR - 1) * ldc + NR <= c.len().
            unsafe {
                let p = cp.add(i * ldc + 4 * v);
                let r = if acc_in {
                    vaddq_s32(vld1q_s32(p), r)
                } else {
                    r
                };
                vst1q_s32(p, r);
            }
        }
    }
}

/// C[MR x NR] (+)= A B over `kq` k quads: `a` holds int8 weights at
/// `a[q * 64 + 4 i]` (row i, k 4q..4q + 4), `b` the NR column quads of
/// each k quad, `ldb` bytes apart (a packed `[q][NR][4]` panel: NR * 4),
/// `c` rows `ldc` apart.
#[target_feature(enable = "neon")]
pub(crate) fn ukernel(
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
    let mut lo = [[vdupq_n_s32(0); NV]; MR];
    let mut hi = lo;
    for q in 0..kq {
        let bv = load_b(b, q * ldb);
        for i in 0..MR {
            let ai = dup(quad(a, q * 64 + 4 * i));
            for v in 0..NV {
                mull_acc(&mut lo[i][v], &mut hi[i][v], bv[v], ai);
            }
        }
    }
    // Lanes of lo: columns 4v, 4v + 1 (two halves each); hi: 4v + 2, 4v + 3.
    let acc = [0, 1, 2, 3].map(|i| [0, 1].map(|v| vpaddq_s32(lo[i][v], hi[i][v])));
    store_tile(&acc, c, ldc, acc_in);
}

/// [`ukernel`] with `sdot`.
#[target_feature(enable = "neon,dotprod")]
pub(crate) fn ukernel_dot(
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
    let mut acc = [[vdupq_n_s32(0); NV]; MR];
    for q in 0..kq {
        let bv = load_b(b, q * ldb);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = dup(quad(a, q * 64 + 4 * i));
            for (r, &bv) in row.iter_mut().zip(&bv) {
                *r = sdot(*r, bv, ai);
            }
        }
    }
    store_tile(&acc, c, ldc, acc_in);
}
