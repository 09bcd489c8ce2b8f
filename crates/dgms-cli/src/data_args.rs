//! Arguments about data: the image-folder transforms (`--resize`,
//! `--crop`, `--random-resized-crop`), `dgms eval` and `dgms data export`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use dgms_train::ImageSettings;

/// Transforms of a folder data source (`imagenet:DIR`, `folder:TRAIN,VAL`);
/// ignored by the in-memory sets, whose image size is fixed.
#[derive(Args, Clone, Debug, Default)]
pub struct ImageArgs {
    /// Folder data: shorter side after resizing [default: 256] (the
    /// reference's --base-size).
    #[arg(long)]
    pub resize: Option<u32>,
    /// Folder data: side of the square crop the model sees [default: 224]
    /// (the reference's --crop-size).
    #[arg(long)]
    pub crop: Option<u32>,
    /// Folder data: train with torchvision's RandomResizedCrop(crop)
    /// (scale 0.08-1, ratio 3/4-4/3) instead of resize + random crop.
    #[arg(long)]
    pub random_resized_crop: bool,
}

impl ImageArgs {
    /// `base` with the flags given.
    pub fn over(&self, base: ImageSettings) -> ImageSettings {
        ImageSettings {
            resize: self.resize.unwrap_or(base.resize),
            crop: self.crop.unwrap_or(base.crop),
            random_resized_crop: self.random_resized_crop || base.random_resized_crop,
        }
    }
}

/// `dgms eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// A dgms checkpoint (its network, data source and transforms are the
    /// defaults), or a DGMS authors' checkpoint (.pth.tar: give --model
    /// and --data).
    #[arg(long, required_unless_present = "weights", conflicts_with = "weights")]
    pub checkpoint: Option<PathBuf>,
    /// Network of --weights or of a DGMS authors' --checkpoint, e.g.
    /// resnet18.
    #[arg(long)]
    pub model: Option<String>,
    /// How mixture weights are hardened (see `dgms harden --help`).
    #[arg(long, value_enum, default_value_t = crate::args::HardeningArg::LogSpace)]
    pub hardening: crate::args::HardeningArg,
    /// A weights file of --model: safetensors, a dgms checkpoint or a
    /// PyTorch .pth (torchvision names); needs --data.
    #[arg(long, requires = "model")]
    pub weights: Option<PathBuf>,
    /// Data source, e.g. imagenet:DIR (default: the checkpoint's).
    #[arg(long)]
    pub data: Option<String>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    pub max_eval: Option<usize>,
    /// Images per evaluation batch [default: 250, or 50 for image folders].
    #[arg(long)]
    pub test_batch_size: Option<usize>,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub device: crate::args::DeviceArg,
    #[command(flatten)]
    pub images: ImageArgs,
}

/// `dgms data ...`.
#[derive(Subcommand)]
pub enum DataCommand {
    /// Writes what the model would see: the first --limit images of a
    /// split after the loader's transforms (the train split with the
    /// augmentation of epoch 0 for --seed), as safetensors (`images` N x C
    /// x H x W f32, `labels` u32), and with --png a contact sheet of them.
    Export(DataExportArgs),
}

/// Which split of a data source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    Train,
    Val,
}

/// `dgms data export`.
#[derive(Args)]
pub struct DataExportArgs {
    /// Data source (embedded, imagenet:DIR, folder:TRAIN,VAL, ...).
    #[arg(long, default_value = "embedded")]
    pub data: String,
    #[arg(long, value_enum, default_value_t = SplitArg::Val)]
    pub split: SplitArg,
    /// Number of images (the first ones of the split, in file order).
    #[arg(long, default_value_t = 64)]
    pub limit: usize,
    /// Seed of the training augmentation (--split train).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The safetensors file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write a contact sheet of the images (PNG).
    #[arg(long)]
    pub png: Option<PathBuf>,
    #[command(flatten)]
    pub images: ImageArgs,
}
