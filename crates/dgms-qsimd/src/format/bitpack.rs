//! Little-endian bit packing of b-bit indices, b in {2, 3, 4, 8}.
//!
//! Weight `i` occupies bits `[i*b, (i+1)*b)` of the stream, bit 0 being the
//! least significant bit of byte 0. Every width packs 8 weights into exactly
//! `b` bytes, so the fast paths work on groups of 8 (2, 4, 8 bits: whole
//! bytes; 3 bits: a 24-bit word) and only a tail of fewer than 8 weights takes
//! the generic bit-by-bit path.

use crate::error::{QsimdError, Result};

/// The index widths the format supports.
pub const SUPPORTED_BITS: [u32; 4] = [2, 3, 4, 8];

/// Smallest supported width `b` with `2^b >= k`; `k` must be in `2..=256`.
///
/// Why not `ceil(log2 k)`: kernels only exist for 2, 3, 4 and 8 bits, so
/// e.g. K = 2 is stored in 2 bits and K = 17 in 8.
pub fn bits_for_k(k: usize) -> Result<u32> {
    if !(2..=256).contains(&k) {
        return Err(QsimdError::InvalidK { k });
    }
    Ok(SUPPORTED_BITS
        .into_iter()
        .find(|&b| (1usize << b) >= k)
        .unwrap_or(8))
}

/// Number of bytes holding `n` indices of `bits` bits, or `None` on overflow.
pub fn packed_len(n: usize, bits: u32) -> Option<usize> {
    let total_bits = n.checked_mul(bits as usize)?;
    Some(total_bits.div_ceil(8))
}

fn check_bits(bits: u32) {
    assert!(
        SUPPORTED_BITS.contains(&bits),
        "unsupported index width {bits} bits (expected one of 2, 3, 4, 8)"
    );
}

/// Packs one index per element of `indices` into a `bits`-wide stream.
///
/// Only the low `bits` bits of each index are kept (callers validate
/// `index < K` first); padding bits of the last byte are 0.
///
/// # Panics
/// If `bits` is not one of 2, 3, 4, 8 (a caller bug, never input data).
pub fn pack_indices(indices: &[u8], bits: u32) -> Vec<u8> {
    check_bits(bits);
    let n = indices.len();
    let mut out = vec![0u8; packed_len(n, bits).unwrap_or(0)];
    let groups = n / 8;
    let (head_in, tail_in) = indices.split_at(groups * 8);
    let (head_out, tail_out) = out.split_at_mut(groups * bits as usize);
    match bits {
        2 => {
            for (o, i) in head_out.iter_mut().zip(head_in.chunks_exact(4)) {
                *o = (i[0] & 3) | (i[1] & 3) << 2 | (i[2] & 3) << 4 | (i[3] & 3) << 6;
            }
        }
        3 => {
            for (o, i) in head_out.chunks_exact_mut(3).zip(head_in.chunks_exact(8)) {
                let mut word = 0u32;
                for (j, &v) in i.iter().enumerate() {
                    word |= u32::from(v & 7) << (3 * j);
                }
                o.copy_from_slice(&word.to_le_bytes()[..3]);
            }
        }
        4 => {
            for (o, i) in head_out.iter_mut().zip(head_in.chunks_exact(2)) {
                *o = (i[0] & 15) | (i[1] & 15) << 4;
            }
        }
        _ => head_out.copy_from_slice(head_in),
    }
    pack_generic(tail_in, bits, tail_out);
    out
}

/// Bit-by-bit packing, for tails of fewer than 8 indices (byte aligned).
fn pack_generic(indices: &[u8], bits: u32, out: &mut [u8]) {
    let mask = ((1u16 << bits) - 1) as u8;
    for (i, &v) in indices.iter().enumerate() {
        let bit = i * bits as usize;
        let word = u16::from(v & mask) << (bit % 8);
        if let Some(b) = out.get_mut(bit / 8) {
            *b |= word as u8;
        }
        if let Some(b) = out.get_mut(bit / 8 + 1) {
            *b |= (word >> 8) as u8;
        }
    }
}

/// Unpacks the first `n` indices of a `bits`-wide stream into `out[..n]`.
///
/// # Panics
/// If `bits` is not one of 2, 3, 4, 8, if `packed` is shorter than
/// `ceil(n*bits/8)` bytes or if `out` is shorter than `n` (caller bugs: the
/// reader checks lengths before unpacking).
pub fn unpack_indices(packed: &[u8], bits: u32, n: usize, out: &mut [u8]) {
    check_bits(bits);
    let need = packed_len(n, bits).unwrap_or(usize::MAX);
    assert!(
        packed.len() >= need,
        "packed stream of {} bytes is too short for {n} indices of {bits} bits ({need} bytes)",
        packed.len()
    );
    assert!(
        out.len() >= n,
        "output of {} entries is too short for {n} indices",
        out.len()
    );
    let out = &mut out[..n];
    let groups = n / 8;
    let (head_out, tail_out) = out.split_at_mut(groups * 8);
    let (head_in, tail_in) = packed.split_at(groups * bits as usize);
    match bits {
        2 => {
            for (o, &b) in head_out.chunks_exact_mut(4).zip(head_in) {
                o[0] = b & 3;
                o[1] = (b >> 2) & 3;
                o[2] = (b >> 4) & 3;
                o[3] = b >> 6;
            }
        }
        3 => {
            for (o, i) in head_out.chunks_exact_mut(8).zip(head_in.chunks_exact(3)) {
                let word = u32::from_le_bytes([i[0], i[1], i[2], 0]);
                for (j, v) in o.iter_mut().enumerate() {
                    *v = ((word >> (3 * j)) & 7) as u8;
                }
            }
        }
        4 => {
            for (o, &b) in head_out.chunks_exact_mut(2).zip(head_in) {
                o[0] = b & 15;
                o[1] = b >> 4;
            }
        }
        _ => head_out.copy_from_slice(&head_in[..groups * 8]),
    }
    unpack_generic(tail_in, bits, tail_out);
}

/// Bit-by-bit unpacking, for tails of fewer than 8 indices (byte aligned).
fn unpack_generic(packed: &[u8], bits: u32, out: &mut [u8]) {
    let mask = (1u16 << bits) - 1;
    for (i, v) in out.iter_mut().enumerate() {
        let bit = i * bits as usize;
        let lo = u16::from(packed.get(bit / 8).copied().unwrap_or(0));
        let hi = u16::from(packed.get(bit / 8 + 1).copied().unwrap_or(0));
        *v = (((lo | hi << 8) >> (bit % 8)) & mask) as u8;
    }
}

/// Whether the padding bits after `n` indices in the last byte are all 0.
///
/// Why check: a reader that ignored them would accept two different files
/// for one model, and a writer never sets them.
pub fn padding_is_zero(packed: &[u8], bits: u32, n: usize) -> bool {
    let Some(total) = n.checked_mul(bits as usize) else {
        return false;
    };
    let used = total % 8;
    if used == 0 {
        return true;
    }
    packed.get(total / 8).is_none_or(|&last| last >> used == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_for_k_table() {
        let want = [
            (2, 2),
            (3, 2),
            (4, 2),
            (5, 3),
            (8, 3),
            (9, 4),
            (16, 4),
            (17, 8),
            (256, 8),
        ];
        for (k, b) in want {
            assert_eq!(bits_for_k(k).unwrap(), b, "K = {k}");
        }
        assert!(bits_for_k(1).is_err());
        assert!(bits_for_k(257).is_err());
    }

    #[test]
    fn three_bit_layout_straddles_bytes() {
        // weights 0..8 = 1..=7,0 -> bit stream 001 010 011 100 101 110 111 000
        let idx = [1, 2, 3, 4, 5, 6, 7, 0];
        let p = pack_indices(&idx, 3);
        assert_eq!(p, vec![0b1101_0001, 0b0101_1000, 0b0001_1111]);
        let mut out = [0u8; 8];
        unpack_indices(&p, 3, 8, &mut out);
        assert_eq!(out, idx);
    }

    #[test]
    fn padding_check() {
        assert!(padding_is_zero(&[0b0000_0111], 3, 1));
        assert!(!padding_is_zero(&[0b0000_1111], 3, 1));
        assert!(padding_is_zero(&[0xff], 4, 2));
    }
}
