//! Fetching MNIST, Fashion-MNIST and CIFAR-10 from the Hugging Face hub
//! through `candle-datasets` (feature `hub`, off by default).
//!
//! This needs network access to the hub (the files are cached by `hf-hub`
//! afterwards). The machines this project is built and tested on have none,
//! so this module is compiled (`cargo check -p dgms-data --features hub`)
//! but never run by the test suite; use `DataSource` with local files there.

use candle_core::{DType, Tensor};

use crate::dataset::{Dataset, DatasetKind, Splits};
use crate::error::{DataError, Result};

/// Converts candle-datasets' f32 pixels in [0, 1] back to bytes (they were
/// bytes divided by 255, so rounding recovers them exactly).
fn to_bytes(t: &Tensor) -> candle_core::Result<Vec<u8>> {
    (t * 255.0)?
        .round()?
        .clamp(0f32, 255f32)?
        .to_dtype(DType::U8)?
        .flatten_all()?
        .to_vec1::<u8>()
}

fn labels(t: &Tensor) -> candle_core::Result<Vec<u8>> {
    t.to_dtype(DType::U8)?.flatten_all()?.to_vec1::<u8>()
}

/// Fetches `kind` from the hub (parquet files of `ylecun/mnist`,
/// `zalando-datasets/fashion_mnist` or `cifar10`) and converts it to our
/// [`Dataset`]s.
///
/// Requires network access; not run in this repository's tests (no network
/// here).
pub fn load_hub(kind: DatasetKind) -> Result<Splits> {
    let hub_err = |source| DataError::Hub {
        dataset: kind.name().to_string(),
        source,
    };
    let loaded = match kind {
        DatasetKind::Mnist => candle_datasets::vision::mnist::load(),
        DatasetKind::FashionMnist => candle_datasets::vision::fashion_mnist::load(),
        DatasetKind::Cifar10 => candle_datasets::vision::cifar::load(),
    }
    .map_err(hub_err)?;
    let (c, h, w) = kind.shape();
    let images = |t: &Tensor| -> candle_core::Result<Vec<u8>> {
        match kind {
            // candle-datasets 0.11 builds the CIFAR hub tensor as
            // (N, H, W, C).permute(0, 3, 2, 1) = (N, C, W, H): rows and
            // columns swapped. Swap them back to CHW.
            DatasetKind::Cifar10 => to_bytes(&t.transpose(2, 3)?.contiguous()?),
            DatasetKind::Mnist | DatasetKind::FashionMnist => to_bytes(t),
        }
    };
    let split = |name: &str, x: &Tensor, y: &Tensor| -> Result<Dataset> {
        Dataset::new(
            format!("hub:{}/{name}", kind.name()),
            kind,
            images(x).map_err(hub_err)?,
            labels(y).map_err(hub_err)?,
            c,
            h,
            w,
            loaded.labels,
        )
    };
    Ok(Splits {
        train: split("train", &loaded.train_images, &loaded.train_labels)?,
        test: split("test", &loaded.test_images, &loaded.test_labels)?,
    })
}
