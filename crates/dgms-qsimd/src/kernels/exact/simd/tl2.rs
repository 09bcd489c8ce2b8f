//! The 2-bit table-lookup GEMV's block kernels (see `exact/tl2.rs` for the
//! layout, the tables and the summation order): `acc[16] +=` one row
//! group's sums over the first `nl` lines of `lines`, with the block's
//! pair tables `tb` (16 f32 per pair, 8 pairs per line).
//!
//! - AVX-512: one `vpermps` fetches 16 rows' table entries of one pair
//!   (it reads only the low 4 bits of each dword lane, so no mask): a line
//!   (8 pairs) is one load, 7 shifts, 8 permutes (table as memory
//!   operand) and 8 adds, one accumulator per nibble. Loading the line at
//!   byte offsets 1..=3 instead of shifting (nibble `2b` in the low bits
//!   of the load at offset `b`) measured slower here (0.36 against
//!   0.28 ms for 4096 x 4096 on one thread): each such load splits across
//!   two cache lines.
//! - AVX2: two 8-row halves; `vpermps` reads 3 index bits, so a pair
//!   fetches from both 8-entry halves of its table and `vblendvps` picks
//!   on index bit 3 (shifted into the sign bit).
//! - NEON: `tbl` on the table's 64 bytes with byte indices `4 n + 0..=3`
//!   built from each 4-row quarter's nibbles.
//!
//! Every function is `#[target_feature]`; the driver reaches them only
//! with a `CheckedIsa` of their ISA, which only `Isa::check` makes.

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::kernels::exact::tl2::PairTable;
use crate::kernels::layout::Line;

/// Table floats per line (8 pairs x 16 entries; `PairTable`s are 16
/// consecutive f32, so the tables of a block are one f32 array).
const LINE_TABLES: usize = 128;

/// AVX-512 block kernel (see the module docs).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
pub(crate) fn gemv_block_avx512(lines: &[Line], nl: usize, tb: &[PairTable], acc: &mut [f32]) {
    assert!(lines.len() >= nl && tb.len() >= nl * 8 && acc.len() >= 16);
    let (lp, tp) = (lines.as_ptr().cast::<u8>(), tb.as_ptr().cast::<f32>());
    let mut a = [_mm512_setzero_ps(); 8];
    for m in 0..nl {
        // SAFETY: line m lies in `lines` (m < nl <= lines.len()), and the
        // floats 128m..128m + 128 in `tb` (asserted); lines and tables
        // are 64-byte aligned.
        unsafe {
            let p = lp.add(64 * m);
            let t = tp.add(LINE_TABLES * m);
            let v = _mm512_load_si512(p.cast());
            macro_rules! nibble {
                ($n:literal) => {{
                    let idx = _mm512_srli_epi32::<{ 4 * $n }>(v);
                    let t = _mm512_permutexvar_ps(idx, _mm512_load_ps(t.add(16 * $n)));
                    a[$n] = _mm512_add_ps(a[$n], t);
                }};
            }
            nibble!(0);
            nibble!(1);
            nibble!(2);
            nibble!(3);
            nibble!(4);
            nibble!(5);
            nibble!(6);
            nibble!(7);
        }
    }
    let s01 = _mm512_add_ps(a[0], a[1]);
    let s23 = _mm512_add_ps(a[2], a[3]);
    let s45 = _mm512_add_ps(a[4], a[5]);
    let s67 = _mm512_add_ps(a[6], a[7]);
    let s = _mm512_add_ps(_mm512_add_ps(s01, s23), _mm512_add_ps(s45, s67));
    // SAFETY: acc holds at least 16 f32 (asserted).
    unsafe {
        let old = _mm512_loadu_ps(acc.as_ptr());
        _mm512_storeu_ps(acc.as_mut_ptr(), _mm512_add_ps(old, s));
    }
}

/// AVX2 block kernel (see the module docs).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn gemv_block_avx2(lines: &[Line], nl: usize, tb: &[PairTable], acc: &mut [f32]) {
    assert!(lines.len() >= nl && tb.len() >= nl * 8 && acc.len() >= 16);
    let (lp, tp) = (lines.as_ptr().cast::<u8>(), tb.as_ptr().cast::<f32>());
    // a[h][n % 4]: rows 8h..8h + 8, pairs n and n + 4 of every line.
    let mut a = [[_mm256_setzero_ps(); 4]; 2];
    for m in 0..nl {
        for (h, ah) in a.iter_mut().enumerate() {
            // SAFETY: bytes 64m + 32h..64m + 32h + 32 lie in `lines`
            // (m < nl <= lines.len()), and the floats 128m..128m + 128 in
            // `tb` (asserted); lines and tables are 64-byte aligned.
            unsafe {
                let v = _mm256_load_si256(lp.add(64 * m + 32 * h).cast());
                let t = tp.add(LINE_TABLES * m);
                macro_rules! nibble {
                    ($n:literal) => {{
                        let idx = _mm256_srli_epi32::<{ 4 * $n }>(v);
                        let tn = t.add(16 * $n);
                        // Index bit 3 (bit 4n + 3 of the dword) -> sign bit.
                        let r = _mm256_blendv_ps(
                            _mm256_permutevar8x32_ps(_mm256_load_ps(tn), idx),
                            _mm256_permutevar8x32_ps(_mm256_load_ps(tn.add(8)), idx),
                            _mm256_castsi256_ps(_mm256_slli_epi32::<{ 28 - 4 * $n }>(v)),
                        );
                        ah[$n % 4] = _mm256_add_ps(ah[$n % 4], r);
                    }};
                }
                nibble!(0);
                nibble!(1);
                nibble!(2);
                nibble!(3);
                nibble!(4);
                nibble!(5);
                nibble!(6);
                nibble!(7);
            }
        }
    }
    for (h, ah) in a.iter().enumerate() {
        let s = _mm256_add_ps(_mm256_add_ps(ah[0], ah[1]), _mm256_add_ps(ah[2], ah[3]));
        // SAFETY: 8h + 8 <= 16 <= acc.len() (asserted).
        unsafe {
            let q = acc.as_mut_ptr().add(8 * h);
            _mm256_storeu_ps(q, _mm256_add_ps(_mm256_loadu_ps(q), s));
        }
    }
}

/// NEON block kernel (see the module docs).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
pub(crate) fn gemv_block_neon(lines: &[Line], nl: usize, tb: &[PairTable], acc: &mut [f32]) {
    assert!(lines.len() >= nl && tb.len() >= nl * 8 && acc.len() >= 16);
    let (lp, tp) = (lines.as_ptr().cast::<u8>(), tb.as_ptr().cast::<f32>());
    let low4 = vdupq_n_u32(0x0F);
    let spread = vdupq_n_u32(0x0404_0404);
    let bytes = vdupq_n_u32(0x0302_0100);
    // a[q][n % 4]: rows 4q..4q + 4, pairs n and n + 4 of every line.
    let mut a = [[vdupq_n_f32(0.0); 4]; 4];
    for m in 0..nl {
        // SAFETY: bytes 64m..64m + 64 lie in `lines` (m < nl <=
        // lines.len()), the floats 128m..128m + 128 in `tb` (asserted).
        unsafe {
            let p = lp.add(64 * m);
            let v = [0, 1, 2, 3].map(|q| vld1q_u32(p.add(16 * q).cast()));
            for n in 0..8 {
                let table = vld1q_u8_x4(tp.add(LINE_TABLES * m + 16 * n).cast());
                let sh = vdupq_n_s32(-4 * n as i32);
                for (q, aq) in a.iter_mut().enumerate() {
                    let nib = vandq_u32(vshlq_u32(v[q], sh), low4);
                    let idx = vmlaq_u32(bytes, nib, spread);
                    let t = vqtbl4q_u8(table, vreinterpretq_u8_u32(idx));
                    aq[n % 4] = vaddq_f32(aq[n % 4], vreinterpretq_f32_u8(t));
                }
            }
        }
    }
    for (q, aq) in a.iter().enumerate() {
        let s = vaddq_f32(vaddq_f32(aq[0], aq[1]), vaddq_f32(aq[2], aq[3]));
        // SAFETY: 4q + 4 <= 16 <= acc.len() (asserted).
        unsafe {
            let o = acc.as_mut_ptr().add(4 * q);
            vst1q_f32(o, vaddq_f32(vld1q_f32(o), s));
        }
    }
}
