//! The benchmark's image folder: ImageNet-like JPEGs (500 x 375 and
//! 375 x 500, quality 90) written from a seed, so every run reads the
//! same bytes. The content is smooth colour gradients and blobs plus
//! pixel noise: flat synthetic images would compress to a few KB and make
//! decoding look cheaper than on photographs.

use std::path::Path;

use anyhow::{Context, Result};
use image::codecs::jpeg::JpegEncoder;
use image::ExtendedColorType;
use rayon::prelude::*;

/// JPEG quality of the generated files (typical of ImageNet's).
pub const JPEG_QUALITY: u8 = 90;
/// Class folders the images are spread over.
pub const CLASSES: usize = 4;

/// splitmix64: a few lines instead of a dependency; the benchmark only
/// needs reproducible, well-mixed numbers.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Width and height of image `index`: landscape and portrait alternate
/// (ImageNet's two most common shapes), so both resize branches run.
pub fn image_size(index: usize) -> (u32, u32) {
    if index.is_multiple_of(2) {
        (500, 375)
    } else {
        (375, 500)
    }
}

/// The JPEG bytes of image `index` of the folder drawn from `seed`.
pub fn encode_image(seed: u64, index: usize) -> Result<Vec<u8>> {
    let (w, h) = image_size(index);
    let mut rng = SplitMix(seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    // Per channel: a base level, a linear gradient, and three soft blobs.
    let mut channels = Vec::with_capacity(3);
    for _ in 0..3 {
        let base = 40.0 + 150.0 * rng.unit();
        let (gx, gy) = (80.0 * (rng.unit() - 0.5), 80.0 * (rng.unit() - 0.5));
        let blobs: Vec<[f32; 4]> = (0..3)
            .map(|_| {
                [
                    rng.unit() * w as f32,
                    rng.unit() * h as f32,
                    40.0 + 120.0 * rng.unit(),
                    120.0 * (rng.unit() - 0.5),
                ]
            })
            .collect();
        channels.push((base, gx, gy, blobs));
    }
    let mut pixels = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            // Sensor-like noise, mostly in brightness (as in photographs,
            // where JPEG keeps luma at full resolution): realistic sizes.
            let luma = 40.0 * (rng.unit() - 0.5);
            for (base, gx, gy, blobs) in &channels {
                let mut v = base + gx * fx + gy * fy;
                for [bx, by, radius, amp] in blobs {
                    let d2 = ((x as f32 - bx).powi(2) + (y as f32 - by).powi(2)) / radius.powi(2);
                    v += amp * (-d2).exp();
                }
                v += luma + 8.0 * (rng.unit() - 0.5);
                pixels.push(v.clamp(0.0, 255.0) as u8);
            }
        }
    }
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
        .encode(&pixels, w, h, ExtendedColorType::Rgb8)
        .with_context(|| format!("encoding benchmark image {index}"))?;
    Ok(out)
}

/// Writes `images` JPEGs under `root/class_NN/img_NNNN.JPEG` (the old
/// folder removed first) and returns their total size in bytes.
pub fn write_folder(root: &Path, images: usize, seed: u64) -> Result<u64> {
    if root.exists() {
        std::fs::remove_dir_all(root)
            .with_context(|| format!("removing the old {}", root.display()))?;
    }
    for c in 0..CLASSES {
        let dir = root.join(format!("class_{c:02}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let sizes: Vec<u64> = (0..images)
        .into_par_iter()
        .map(|i| {
            let bytes = encode_image(seed, i)?;
            // ImageNet's own extension, upper case, as the loader meets it.
            let path = root
                .join(format!("class_{:02}", i % CLASSES))
                .join(format!("img_{i:04}.JPEG"));
            std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            Ok(bytes.len() as u64)
        })
        .collect::<Result<_>>()?;
    Ok(sizes.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let a = encode_image(7, 3).unwrap();
        assert_eq!(a, encode_image(7, 3).unwrap());
        assert_ne!(a, encode_image(8, 3).unwrap(), "seed ignored");
        assert_ne!(a, encode_image(7, 4).unwrap(), "index ignored");
    }

    #[test]
    fn images_are_imagenet_like() {
        for i in 0..2 {
            let bytes = encode_image(1, i).unwrap();
            let img = dgms_data::image_decode::decode_rgb_bytes(&bytes).unwrap();
            assert_eq!((img.width, img.height), image_size(i));
            // ImageNet's JPEGs average about 110 KB; flat images would be
            // a few KB and decode unrealistically fast.
            let kb = bytes.len() / 1024;
            assert!((40..400).contains(&kb), "{kb} KB");
        }
    }
}
