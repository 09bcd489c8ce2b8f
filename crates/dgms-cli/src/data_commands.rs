//! `dgms eval` and `dgms data export`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use dgms_data::inspect::{write_batch, write_contact_sheet};
use dgms_data::{Loader, LoaderConfig, Mode};
use dgms_train::phases::{self, EvalOptions, EvalWeights};
use dgms_train::train::session::Data;
use dgms_train::ImageSettings;

use crate::data_args::{DataExportArgs, EvalArgs, SplitArg};
use crate::Output;

/// `dgms eval`: the result as JSON on stdout (and in `--json`), a progress
/// bar on stderr.
pub fn eval(args: &EvalArgs, out: &mut Output) -> Result<()> {
    let weights = match (&args.checkpoint, &args.model, &args.weights) {
        (Some(path), _, _) => EvalWeights::Checkpoint(path),
        (None, Some(model), Some(weights)) => EvalWeights::File { model, weights },
        (None, None, Some(_)) => bail!("--weights needs --model NAME (the network of the file)"),
        _ => bail!("give --checkpoint FILE, or --model NAME with --weights FILE"),
    };
    let input: &Path = match weights {
        EvalWeights::Checkpoint(p) => p,
        EvalWeights::File { weights, .. } => weights,
    };
    if let Some(json) = &args.json {
        dgms_io::ensure_not_input("--json", json, &[("the weights", input)])?;
    }
    if args.images.random_resized_crop {
        bail!("--random-resized-crop is a training transform; evaluation always centre-crops");
    }
    let opts = EvalOptions {
        data: args.data.as_deref(),
        resize: args.images.resize,
        crop: args.images.crop,
        max_eval: args.max_eval,
        batch_size: args.test_batch_size,
        progress: true,
        model: args.model.as_deref(),
        hardening: args.hardening.into(),
        device: args.device.device,
    };
    let result = phases::eval_with(weights, &opts)?;
    if result.skipped > 0 {
        eprintln!(
            "warning: {} file(s) could not be decoded and were left out (each named above)",
            result.skipped
        );
    }
    if let Some(json) = &args.json {
        let text = serde_json::to_string_pretty(&result)?;
        dgms_io::write_atomic(json, text.as_bytes())?;
    }
    out.json(&result)
}

/// `dgms data export`.
pub fn export(args: &DataExportArgs, out: &mut Output) -> Result<()> {
    if args.limit == 0 {
        bail!("--limit 0: at least 1 image is needed");
    }
    if let Some(png) = &args.png {
        dgms_io::ensure_not_input("--png", png, &[("--out", &args.out)])?;
    }
    let images = args.images.over(ImageSettings::default());
    images.validate()?;
    let data = Data::load_with(&args.data, &images)?;
    let (split, mode) = match args.split {
        SplitArg::Train => (&data.train, Mode::Train),
        SplitArg::Val => (&data.test, Mode::Eval),
    };
    let split = split.head(args.limit)?;
    // File order, so that image k of the output is file k of the split.
    let config = LoaderConfig::for_split(&split, mode, args.limit, args.seed).with_shuffle(false);
    let normalize = config.normalize.clone();
    let loader = Loader::new(split.clone(), config)?;
    let batch = loader
        .batch(0, 0)
        .with_context(|| format!("building the batch of {}", split.name()))?;
    if batch.is_empty() {
        bail!(
            "none of the {} files of {} could be decoded (each named above)",
            split.len(),
            split.name()
        );
    }
    write_batch(&batch, &args.out)?;
    if let Some(png) = &args.png {
        write_contact_sheet(&batch, &normalize, png)?;
    }
    let (n, c, h, w) = batch.images.dims4()?;
    let skipped = split.skipped();
    out.line(format_args!(
        "{n} images of {} ({c} x {h} x {w}, {} classes); {} skipped",
        split.name(),
        split.classes(),
        skipped.len()
    ))?;
    out.line(format_args!("wrote {}", args.out.display()))?;
    if let Some(png) = &args.png {
        out.line(format_args!("wrote {}", png.display()))?;
    }
    Ok(())
}
