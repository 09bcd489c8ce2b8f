//! `dgms report`: this project's table (docs/METHOD.md#report) and the
//! DGMS authors' report of a DGMS, hardened or authors' checkpoint, with
//! their final accuracy line after an optional evaluation; and, for
//! `--plot`, what each mixture layer's picture shows.

use std::path::Path;

use dgms_core::{HardenedLayer, HardeningRule, ModelReport};
use serde::Serialize;

use crate::config::InvalidSetting;
use crate::error::{Result, TrainError};
use crate::layer_pictures::{self, LayerPicture};
use crate::phases::{harden_model_with, open, report_of, EvalOptions, OpenOptions};
use crate::reference_report::{ReferenceAccuracy, ReferenceReport};
use crate::train::checkpoint::Checkpoint;
use crate::train::session::{default_eval_batch, evaluate_with, Model};

/// What `dgms report` gives: this project's table and the authors' report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub table: ModelReport,
    /// The report as the DGMS authors' code prints it.
    pub reference: ReferenceReport,
}

/// The table of [`report_with`] for a dgms checkpoint, default rule.
pub fn report(path: &Path) -> Result<ModelReport> {
    Ok(report_with(path, &OpenOptions::default(), HardeningRule::LogSpace, None)?.table)
}

/// `dgms report`: the report (docs/METHOD.md#report) of a DGMS, hardened
/// or DGMS authors' checkpoint, mixture layers hardened with `rule`; with
/// `evaluate`, the hardened model is evaluated on the test split of
/// `opts.data` (or the run's data) for the authors' final line.
pub fn report_with(
    path: &Path,
    opts: &OpenOptions<'_>,
    rule: HardeningRule,
    evaluate: Option<&EvalOptions<'_>>,
) -> Result<Report> {
    Ok(report_with_pictures(path, opts, rule, evaluate, false)?.0)
}

/// [`report_with`], and with `pictures` what the picture of every mixture
/// layer shows (`dgms report --plot`; see [`crate::layer_pictures`] for
/// what is known of each kind of checkpoint), in the model's order; layers
/// kept in fp32 have none. Without `pictures` the list is empty (no
/// weights are copied). The pictures are taken before hardening, which
/// replaces the weights and drops the mixtures.
pub fn report_with_pictures(
    path: &Path,
    opts: &OpenOptions<'_>,
    rule: HardeningRule,
    evaluate: Option<&EvalOptions<'_>>,
    pictures: bool,
) -> Result<(Report, Vec<LayerPicture>)> {
    let (ckpt, data, model) = open(path, opts)?;
    let soft = match pictures && !ckpt.meta.hardened {
        true => Some(layer_pictures::of_mixtures(&model)?),
        false => None,
    };
    let layers = if ckpt.meta.hardened {
        stored_layers(path, &ckpt, &model)?
    } else {
        harden_model_with(&model, rule)?
    };
    let pictures = match soft {
        Some(soft) => layer_pictures::with_levels(soft, &layers),
        None if pictures => layer_pictures::of_hardened(&layers),
        None => Vec::new(),
    };
    let gmm: usize = layers.iter().map(|l| 3 * l.k()).sum();
    let mut reference = ReferenceReport::new(&model, &layers, gmm);
    if let Some(eval) = evaluate {
        let data = data.ok_or_else(|| {
            TrainError::from(InvalidSetting {
                flag: "--data",
                value: "(none)".into(),
                expected: "a data source to evaluate on: the DGMS authors' checkpoints record none"
                    .into(),
            })
        })?;
        let test = data.test_subset(eval.max_eval)?;
        let batch = eval.batch_size.unwrap_or_else(|| default_eval_batch(&test));
        let tally = evaluate_with(model.net.as_ref(), &test, batch, eval.progress)?;
        reference.accuracy = Some(ReferenceAccuracy {
            top1: tally.top1(),
            top5: tally.top5(),
        });
    }
    let report = Report {
        table: report_of(&layers),
        reference,
    };
    Ok((report, pictures))
}

/// The hardened layers stored in a hardened checkpoint.
fn stored_layers(path: &Path, ckpt: &Checkpoint, model: &Model) -> Result<Vec<HardenedLayer>> {
    let mut layers = Vec::new();
    for (name, &k) in &ckpt.meta.mixture_k {
        let get = |suffix: &str| {
            ckpt.tensors
                .get(&format!("{name}.{suffix}"))
                .ok_or_else(|| TrainError::MissingTensor {
                    file: format!("{}: ", path.display()),
                    name: format!("{name}.{suffix}"),
                    hint: "",
                })
        };
        let conv = model.conv(name)?;
        let layer = HardenedLayer {
            name: name.clone(),
            shape: conv.weight().dims().to_vec(),
            indices: get("indices")?.to_vec1()?,
            table: get("codebook")?.to_vec1()?,
            reference_underflow: None,
        };
        if layer.k() != k {
            return Err(TrainError::CodebookLength {
                file: format!("{}: ", path.display()),
                name: name.clone(),
                found: layer.k(),
                k,
            });
        }
        layers.push(layer);
    }
    Ok(layers)
}
