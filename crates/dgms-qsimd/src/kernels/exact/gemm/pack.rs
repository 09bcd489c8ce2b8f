//! The GEMM's right-hand side, and the packing of a row-major one into
//! `[panel][k][NR]` micro-panels (the im2col matrix of a convolution is
//! packed from the images, see `image.rs`).

use super::super::conv::ConvGeometry;

/// The K x N right-hand side of a GEMM.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rhs<'a> {
    /// A row-major K x `n` matrix.
    Matrix { x: &'a [f32], n: usize },
    /// The im2col matrix of `images` images stored C x N x H x W (one
    /// image: plain CHW): row `(ci*kh + ky)*kw + kx`, column
    /// `(b*out_h + oy)*out_w + ox` (see `conv::im2col`).
    Im2col {
        input: &'a [f32],
        geom: ConvGeometry,
        images: usize,
    },
}

impl Rhs<'_> {
    /// Columns (N).
    pub fn cols(&self) -> usize {
        match self {
            Rhs::Matrix { n, .. } => *n,
            Rhs::Im2col { geom, images, .. } => images * geom.out_pixels(),
        }
    }

    /// The whole K x N matrix into `out`, row-major (the scalar path's
    /// im2col), straight from the definition.
    pub fn materialise(&self, out: &mut [f32]) {
        match *self {
            Rhs::Matrix { x, .. } => out.copy_from_slice(&x[..out.len()]),
            Rhs::Im2col {
                input,
                ref geom,
                images,
            } => {
                let g = geom;
                let (oh, ow, hw) = (g.out_h(), g.out_w(), g.h * g.w);
                for (k, row) in out.chunks_exact_mut(self.cols().max(1)).enumerate() {
                    let (ci, ky, kx) = (k / (g.kh * g.kw), k / g.kw % g.kh, k % g.kw);
                    for (j, v) in row.iter_mut().enumerate() {
                        let (b, oy, ox) = (j / (oh * ow), j / ow % oh, j % ow);
                        let iy = (oy * g.stride + ky).wrapping_sub(g.pad);
                        let ix = (ox * g.stride + kx).wrapping_sub(g.pad);
                        *v = if iy < g.h && ix < g.w {
                            input[(ci * images + b) * hw + iy * g.w + ix]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// Rows `k, k + 1, ...` of a row-major matrix, columns `j0..`.
struct RowGen<'a> {
    x: &'a [f32],
    n: usize,
    k: usize,
    j0: usize,
}

impl<'a> RowGen<'a> {
    /// The next row's `len` columns.
    fn next(&mut self, len: usize) -> &'a [f32] {
        let at = self.k * self.n + self.j0;
        self.k += 1;
        &self.x[at..at + len]
    }
}

/// Values from one packed `[k][nr]` panel to the next: `kc * nr` rounded
/// up to whole cache lines, plus one line if that makes an even number of
/// lines, so that the panels of a block do not all map to the same few L1
/// sets (the matrix packing writes a row of every panel in turn).
pub(crate) fn panel_stride(kc: usize, nr: usize) -> usize {
    let lines = (kc * nr).div_ceil(16);
    16 * (lines | 1)
}

/// Matrix rows scattered together: `ROWS * NR` contiguous values written
/// per panel.
const ROWS: usize = 8;

/// Packs rows `k0..k0 + kc` (zero at and beyond `k_rows`), columns
/// `j0..j1` of the row-major matrix `x` (`n` columns) into `out` as
/// `[panel][k][NR]` panels [`panel_stride`] apart, the last panel
/// zero-padded. `zero` is scratch of at least `j1 - j0` values.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_matrix<const NR: usize>(
    (x, n): (&[f32], usize),
    k_rows: usize,
    k0: usize,
    kc: usize,
    (j0, j1): (usize, usize),
    zero: &mut [f32],
    out: &mut [f32],
) {
    let w = j1 - j0;
    let (full, rem) = (w / NR, w % NR);
    let ps = panel_stride(kc, NR);
    let out = &mut out[..w.div_ceil(NR) * ps];
    let zero = &mut zero[..w];
    zero.fill(0.0);
    let zero = &*zero;
    let mut rows = RowGen { x, n, k: k0, j0 };
    for kk in (0..kc).step_by(ROWS) {
        let rb = ROWS.min(kc - kk);
        let mut src: [&[f32]; ROWS] = [&[]; ROWS];
        for (r, s) in src.iter_mut().take(rb).enumerate() {
            *s = if k0 + kk + r < k_rows {
                rows.next(w)
            } else {
                zero
            };
        }
        let src = &src[..rb];
        for p in 0..full {
            let dst = &mut out[p * ps + kk * NR..p * ps + (kk + rb) * NR];
            for (d, s) in dst.chunks_exact_mut(NR).zip(src) {
                let d: &mut [f32; NR] = d.try_into().expect("chunks_exact yields NR values");
                *d = s[p * NR..(p + 1) * NR].try_into().expect("NR values");
            }
        }
        if rem > 0 {
            let dst = &mut out[full * ps + kk * NR..full * ps + (kk + rb) * NR];
            for (d, s) in dst.chunks_exact_mut(NR).zip(src) {
                d[..rem].copy_from_slice(&s[full * NR..]);
                d[rem..].fill(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(c: usize, h: usize, w: usize, k: (usize, usize), s: usize, p: usize) -> ConvGeometry {
        ConvGeometry {
            c,
            h,
            w,
            kh: k.0,
            kw: k.1,
            stride: s,
            pad: p,
        }
    }

    /// c, h, w, (kh, kw), stride, pad.
    type Geom = (usize, usize, usize, (usize, usize), usize, usize);

    const GEOMS: [Geom; 9] = [
        (2, 5, 4, (3, 3), 1, 1),
        (3, 7, 7, (3, 3), 2, 1),
        (1, 6, 5, (1, 1), 2, 0),
        (2, 9, 9, (7, 7), 1, 3),
        (2, 9, 8, (7, 7), 2, 3),
        (3, 4, 6, (1, 3), 1, 1),
        (2, 3, 3, (5, 5), 1, 2),
        (1, 8, 8, (3, 3), 1, 0),
        (2, 5, 5, (2, 2), 3, 1),
    ];

    /// The batched im2col matrix equals the kernels' per-image im2col.
    #[test]
    fn im2col_rows_match_im2col() {
        for (c, h, w, k, s, p) in GEOMS {
            let g = geom(c, h, w, k, s, p);
            let n = 3;
            let x: Vec<f32> = (0..c * n * h * w).map(|i| i as f32 * 0.5 - 7.0).collect();
            let (rows, ohw) = (g.patch_len(), g.out_pixels());
            let rhs = Rhs::Im2col {
                input: &x,
                geom: g,
                images: n,
            };
            let mut got = vec![f32::NAN; rows * n * ohw];
            rhs.materialise(&mut got);
            for b in 0..n {
                let img: Vec<f32> = (0..c)
                    .flat_map(|ch| x[(ch * n + b) * h * w..(ch * n + b + 1) * h * w].to_vec())
                    .collect();
                let mut want = vec![0.0; rows * ohw];
                crate::kernels::im2col(&img, &g, &mut want).unwrap();
                for r in 0..rows {
                    let row = &got[r * n * ohw + b * ohw..r * n * ohw + (b + 1) * ohw];
                    assert_eq!(
                        row,
                        &want[r * ohw..(r + 1) * ohw],
                        "{g:?} image {b} row {r}"
                    );
                }
            }
        }
    }

    /// Packing any block of rows and columns, from the images or from
    /// the materialised matrix, equals reading the materialised matrix,
    /// zero-padded.
    #[test]
    fn pack_matches_materialised() {
        use super::super::image::{pack_image, Image};
        for (c, h, w, k, s, p) in GEOMS {
            let g = geom(c, h, w, k, s, p);
            let n = 2;
            let x: Vec<f32> = (0..c * n * h * w).map(|i| i as f32 + 1.0).collect();
            let rhs = Rhs::Im2col {
                input: &x,
                geom: g,
                images: n,
            };
            let (kr, nc) = (g.patch_len(), rhs.cols());
            let mut m = vec![0.0; kr * nc];
            rhs.materialise(&mut m);
            let mut buf = Vec::new();
            let img = if p == 0 {
                Image::unpadded(&x, g, n)
            } else {
                Image::padded(&x, g, n, &mut buf)
            };
            for (k0, kc) in [(0, kr + 5), (1, 3), (kr.saturating_sub(2), 6)] {
                for (j0, j1) in [(0, nc), (1, nc.min(8)), (nc / 3, nc - 1), (nc - 1, nc)] {
                    for from_image in [true, false] {
                        let ps = panel_stride(kc, 6);
                        let mut out = vec![f32::NAN; (j1 - j0).div_ceil(6) * ps];
                        if from_image {
                            let mut koff = Vec::new();
                            img.row_offsets(kr, k0, kc, &mut koff);
                            pack_image::<6>(&img, &koff, kc, (j0, j1), &mut out);
                        } else {
                            let mut zero = vec![f32::NAN; j1 - j0];
                            pack_matrix::<6>((&m, nc), kr, k0, kc, (j0, j1), &mut zero, &mut out);
                        }
                        for (i, &v) in out.iter().enumerate() {
                            if i % ps >= 6 * kc {
                                continue;
                            }
                            let (pn, kk, jj) = (i / ps, i % ps / 6, i % ps % 6);
                            let (kq, j) = (k0 + kk, j0 + pn * 6 + jj);
                            let want = if kq < kr && j < j1 {
                                m[kq * nc + j]
                            } else {
                                0.0
                            };
                            assert_eq!(v, want, "{g:?} k {kq} j {j} block {k0}+{kc} {j0}..{j1}");
                        }
                    }
                }
            }
        }
    }
}
