//! Crop and flip: shape kept, every value from the image or the padding.

use dgms_data::{Augment, CropFlip, DatasetKind};
use dgms_test_support::rng::chacha;
use proptest::prelude::*;

/// CHW image whose pixels are all non-zero, so 0 in the output means padding.
fn image(c: usize, h: usize, w: usize) -> Vec<u8> {
    (0..c * h * w).map(|k| 1 + (k * 37 % 255) as u8).collect()
}

#[test]
fn identity_and_pure_flip() {
    let (c, h, w) = (2, 3, 4);
    let src = image(c, h, w);
    let mut out = vec![0u8; src.len()];
    CropFlip::identity().apply(&src, c, h, w, &mut out);
    assert_eq!(out, src);
    // A centred crop (dy = dx = pad) is the identity too.
    CropFlip {
        pad: 2,
        dy: 2,
        dx: 2,
        flip: false,
    }
    .apply(&src, c, h, w, &mut out);
    assert_eq!(out, src);

    CropFlip {
        pad: 0,
        dy: 0,
        dx: 0,
        flip: true,
    }
    .apply(&src, c, h, w, &mut out);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                assert_eq!(
                    out[(ch * h + y) * w + x],
                    src[(ch * h + y) * w + (w - 1 - x)]
                );
            }
        }
    }
}

#[test]
fn corner_crop_shifts_in_zero_padding() {
    let (h, w) = (3, 3);
    let src: Vec<u8> = (1..=9).collect();
    let mut out = vec![9u8; 9];
    // Window at the top-left of the padded image: the image moves down-right.
    CropFlip {
        pad: 1,
        dy: 0,
        dx: 0,
        flip: false,
    }
    .apply(&src, 1, h, w, &mut out);
    assert_eq!(out, vec![0, 0, 0, 0, 1, 2, 0, 4, 5]);
    // Bottom-right window (the image moves up-left), then mirrored.
    CropFlip {
        pad: 1,
        dy: 2,
        dx: 2,
        flip: false,
    }
    .apply(&src, 1, h, w, &mut out);
    assert_eq!(out, vec![5, 6, 0, 8, 9, 0, 0, 0, 0]);
    CropFlip {
        pad: 1,
        dy: 2,
        dx: 2,
        flip: true,
    }
    .apply(&src, 1, h, w, &mut out);
    assert_eq!(out, vec![0, 6, 5, 0, 9, 8, 0, 0, 0]);
}

#[test]
fn per_dataset_defaults() {
    assert_eq!(
        Augment::for_kind(DatasetKind::Mnist),
        Augment {
            pad: 2,
            flip: false
        }
    );
    assert_eq!(
        Augment::for_kind(DatasetKind::FashionMnist),
        Augment { pad: 2, flip: true }
    );
    assert_eq!(
        Augment::for_kind(DatasetKind::Cifar10),
        Augment { pad: 4, flip: true }
    );
    assert!(Augment::none().is_identity());
}

#[test]
fn sampling_covers_every_offset_and_both_flips() {
    let aug = Augment { pad: 2, flip: true };
    let mut rng = chacha(3);
    let mut seen_dy = [false; 5];
    let mut seen_dx = [false; 5];
    let mut flips = 0;
    for _ in 0..400 {
        let p = aug.sample(&mut rng);
        seen_dy[p.dy] = true;
        seen_dx[p.dx] = true;
        flips += usize::from(p.flip);
    }
    assert!(seen_dy.iter().all(|&s| s) && seen_dx.iter().all(|&s| s));
    assert!((150..250).contains(&flips), "{flips} flips in 400");
    let no_flip = Augment {
        pad: 2,
        flip: false,
    };
    assert!((0..100).all(|_| !no_flip.sample(&mut rng).flip));
}

proptest! {
    #[test]
    fn values_come_from_image_or_padding(
        c in 1usize..4, h in 1usize..12, w in 1usize..12,
        pad in 0usize..6, flip: bool, seed: u64,
    ) {
        let src = image(c, h, w);
        let params = Augment { pad, flip }.sample(&mut chacha(seed));
        prop_assert!(params.dy <= 2 * pad && params.dx <= 2 * pad);
        prop_assert!(flip || !params.flip);
        let mut out = vec![255u8; src.len()];
        params.apply(&src, c, h, w, &mut out);
        prop_assert_eq!(out.len(), c * h * w);
        let (oy, ox) = (params.dy as isize - pad as isize, params.dx as isize - pad as isize);
        let mut from_image = 0;
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let v = out[(ch * h + y) * w + x];
                    let xs = if params.flip { w - 1 - x } else { x } as isize + ox;
                    let ys = y as isize + oy;
                    if (0..h as isize).contains(&ys) && (0..w as isize).contains(&xs) {
                        prop_assert_eq!(v, src[(ch * h + ys as usize) * w + xs as usize]);
                        from_image += 1;
                    } else {
                        prop_assert_eq!(v, 0);
                    }
                }
            }
        }
        // The overlap of the window with the image is what survives.
        let keep = |n: usize, o: isize| n.saturating_sub(o.unsigned_abs());
        prop_assert_eq!(from_image, c * keep(h, oy) * keep(w, ox));
    }
}
