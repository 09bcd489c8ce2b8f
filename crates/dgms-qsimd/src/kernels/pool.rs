//! Max-pooling of one plane (the engine's `max_pool` runs it per plane),
//! one safe loop compiled once per ISA under `#[target_feature]`
//! (`per_isa!`, as the depthwise fallback): LLVM vectorises it with the
//! ISA's vector width instead of baseline SSE2's 4 lanes. Padding never wins (the max is
//! over the window's elements inside the plane, as PyTorch's -inf
//! padding gives); values combine with `f32::max` (NaN ignored) on every
//! ISA, so all give the same result.

/// A max-pooling window: size, stride, padding (pad < k).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Window {
    /// Output length of one axis of `len` (floor mode, as PyTorch's default).
    pub fn out_len(&self, len: usize) -> usize {
        if len + 2 * self.pad < self.k {
            0
        } else {
            (len + 2 * self.pad - self.k) / self.stride + 1
        }
    }
}

per_isa! {
    /// Max-pools the `h` x `w` plane `src` into `dst` (out_len(h) x
    /// out_len(w)).
    pub(crate) fn max_pool_plane = plane_body(
        src: &[f32],
        hw: (usize, usize),
        p: Window,
        dst: &mut [f32]
    )
}

/// Per output row: the window's rows reduced elementwise into the middle
/// of a row padded with -inf, then each output's k values of that, with
/// no bounds logic.
#[inline(always)]
fn plane_body(src: &[f32], (h, w): (usize, usize), p: Window, dst: &mut [f32]) {
    let ow = p.out_len(w);
    if ow == 0 {
        return;
    }
    // Two more -inf than the windows read: room for `max3s2`'s pairs.
    let mut padded = vec![f32::NEG_INFINITY; w + 2 * p.pad + 2];
    let (mut pair_max, mut firsts) = (vec![0.0f32; ow + 1], vec![0.0f32; ow + 1]);
    for (oy, d) in dst.chunks_exact_mut(ow).enumerate() {
        let y0 = (oy * p.stride).saturating_sub(p.pad);
        let y1 = (oy * p.stride + p.k).saturating_sub(p.pad).min(h);
        // The builder only makes windows with at least one element.
        let win = &src[y0 * w..y1.max(y0) * w];
        let m = &mut padded[p.pad..p.pad + w];
        if win.len() == 3 * w {
            // The usual full window: one pass over its three rows.
            let (a, bc) = win.split_at(w);
            let (b, c) = bc.split_at(w);
            for (((m, &a), &b), &c) in m.iter_mut().zip(a).zip(b).zip(c) {
                *m = a.max(b).max(c);
            }
        } else {
            let mut rows = win.chunks_exact(w);
            match rows.next() {
                Some(first) => m.copy_from_slice(first),
                None => m.fill(f32::NEG_INFINITY),
            }
            for row in rows {
                m.iter_mut().zip(row).for_each(|(m, &v)| *m = m.max(v));
            }
        }
        if (p.k, p.stride) == (3, 2) {
            max3s2(&padded, (&mut pair_max, &mut firsts), d);
        } else {
            horizontal_max(&padded, p, d);
        }
    }
}

/// `d[ox] = max(row[2 ox], row[2 ox + 1], row[2 ox + 2])` (ResNet's 3x3
/// stride-2 pool) in passes that vectorise: per pair of `row` its max
/// and its first value (ow + 1 of each), then per output the max of pair
/// `ox` and the first value of pair `ox + 1`.
#[inline(always)]
fn max3s2(row: &[f32], (pm, first): (&mut [f32], &mut [f32]), d: &mut [f32]) {
    let m = pm.len();
    let pairs = row[..2 * m].chunks_exact(2);
    for ((q, f), r) in pm.iter_mut().zip(first.iter_mut()).zip(pairs) {
        (*q, *f) = (r[0].max(r[1]), r[0]);
    }
    for ((o, &q), &f) in d.iter_mut().zip(pm.iter()).zip(&first[1..]) {
        *o = q.max(f);
    }
}

/// `d[ox] = max(row[ox * stride..ox * stride + k])`, two common windows
/// unrolled (constant k and stride).
#[inline(always)]
fn horizontal_max(row: &[f32], p: Window, d: &mut [f32]) {
    #[inline(always)]
    fn fixed<const K: usize, const S: usize>(row: &[f32], d: &mut [f32]) {
        for (ox, o) in d.iter_mut().enumerate() {
            let win = &row[ox * S..ox * S + K];
            *o = win[1..].iter().fold(win[0], |a, &v| a.max(v));
        }
    }
    match (p.k, p.stride) {
        (2, 2) => fixed::<2, 2>(row, d),
        (3, 1) => fixed::<3, 1>(row, d),
        _ => {
            for (ox, o) in d.iter_mut().enumerate() {
                let win = &row[ox * p.stride..ox * p.stride + p.k];
                *o = win.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
            }
        }
    }
}
