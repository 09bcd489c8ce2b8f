//! How `kernels/mixture.cu` is launched: the grid, block and shared
//! memory of each kernel and the checks on its inputs, shared by the CUDA
//! launcher ([`crate::mixture`]) and the CPU emulation
//! ([`crate::emulated`]) so that the emulation runs the GPU's exact
//! configuration.

/// Threads per block: `THREADS` in mixture.cu.
pub const THREADS: u32 = 128;
/// Warps per block.
pub const WARPS: u32 = THREADS / 32;
/// Most blocks of the backward: each writes 3K + 1 partial sums, and the
/// grid depends on N only, so the sums' order (and bits) too.
pub const MAX_BACKWARD_BLOCKS: u32 = 1024;
/// Most blocks of the forward (a grid-stride loop covers the rest).
pub const MAX_FORWARD_BLOCKS: u32 = 65_535;
/// The largest K: its shared memory (constants and per-warp sums, f64,
/// 30 KiB at K = 256) fits the 48 KiB every CUDA device gives a block.
pub const MAX_K: usize = 256;

/// One kernel launch's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: u32,
    pub block: u32,
    /// Dynamic shared memory, bytes.
    pub shared_bytes: u32,
}

/// The backward's sums over every weight, as the CPU kernel's: sum e_k,
/// the mu terms, the sigma terms (k = 0..K-1) and the tau term.
#[derive(Clone, Debug, PartialEq)]
pub struct Totals {
    pub e: Vec<f64>,
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
    pub tau: f64,
}

impl Totals {
    /// Splits the 3K + 1 column sums of the kernels.
    pub fn from_columns(columns: &[f64], k: usize) -> Self {
        Self {
            e: columns[..k].to_vec(),
            mu: columns[k..2 * k].to_vec(),
            sigma: columns[2 * k..3 * k].to_vec(),
            tau: columns[3 * k],
        }
    }

    /// All zero (no weights).
    pub fn zeros(k: usize) -> Self {
        Self::from_columns(&vec![0.0; 3 * k + 1], k)
    }
}

/// Checks K, the packed length 3K and the weight count (at most
/// `u32::MAX`); returns N as the kernels take it.
pub fn check(n: usize, k: usize, packed_len: usize) -> Result<u32, String> {
    if !(2..=MAX_K).contains(&k) {
        return Err(format!(
            "dgms mixture op (cuda): K = {k}, expected 2..={MAX_K}"
        ));
    }
    if packed_len != 3 * k {
        return Err(format!(
            "dgms mixture op (cuda): {packed_len} packed parameters, expected 3K = {}",
            3 * k
        ));
    }
    u32::try_from(n).map_err(|_| {
        format!(
            "dgms mixture op (cuda): {n} weights in one layer, at most {}",
            u32::MAX
        )
    })
}

/// Columns of the backward's sums: 3K + 1.
pub fn width(k: usize) -> usize {
    3 * k + 1
}

fn shared_bytes(k: usize, rows: u32) -> u32 {
    (width(k) * rows as usize * std::mem::size_of::<f64>()) as u32
}

fn blocks(n: u32, cap: u32) -> u32 {
    n.div_ceil(THREADS).clamp(1, cap)
}

/// `dgms_mixture_forward_*`: one thread per weight, the constants in
/// shared memory.
pub fn forward(n: u32, k: usize) -> Launch {
    forward_capped(n, k, MAX_FORWARD_BLOCKS)
}

/// [`forward`] with at most `max_blocks` blocks (tests use a small cap to
/// make the grid-stride loop go round at small N).
pub fn forward_capped(n: u32, k: usize, max_blocks: u32) -> Launch {
    Launch {
        grid: blocks(n, max_blocks),
        block: THREADS,
        shared_bytes: shared_bytes(k, 1),
    }
}

/// `dgms_mixture_backward_*`: the constants and one row of sums per warp.
pub fn backward(n: u32, k: usize) -> Launch {
    backward_capped(n, k, MAX_BACKWARD_BLOCKS)
}

/// [`backward`] with at most `max_blocks` blocks.
pub fn backward_capped(n: u32, k: usize, max_blocks: u32) -> Launch {
    Launch {
        grid: blocks(n, max_blocks),
        block: THREADS,
        shared_bytes: shared_bytes(k, 1 + WARPS),
    }
}

/// `dgms_mixture_sum_partials`: one thread per column.
pub fn sum_partials(k: usize) -> Launch {
    Launch {
        grid: (width(k) as u32).div_ceil(THREADS),
        block: THREADS,
        shared_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_fit_a_cuda_block() {
        for k in [2, 16, MAX_K] {
            for n in [1, 127, 128, 129, 1 << 20, u32::MAX] {
                let (f, b) = (forward(n, k), backward(n, k));
                assert!(f.grid >= 1 && f.grid <= MAX_FORWARD_BLOCKS);
                assert!(b.grid >= 1 && b.grid <= MAX_BACKWARD_BLOCKS);
                assert!(b.shared_bytes <= 48 * 1024, "K={k}: {}", b.shared_bytes);
            }
        }
        assert_eq!(backward(129, 4).grid, 2);
        assert_eq!(sum_partials(MAX_K).grid * THREADS, 896);
        assert!(check(10, 1, 3).is_err() && check(10, 257, 771).is_err());
        assert!(check(10, 4, 11).unwrap_err().contains("expected 3K = 12"));
        assert_eq!(check(10, 4, 12), Ok(10));
    }
}
