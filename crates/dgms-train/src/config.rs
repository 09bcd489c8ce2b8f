//! The resolved configuration of a training run: every choice spelled out,
//! saved as `config.json` in the run directory and inside each checkpoint.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::image_settings::ImageSettings;
use crate::train::optim::SgdConfig;

/// Defaults shared by every entry point (`dgms pretrain` / `dgms dgms` and
/// `cargo xtask train`), so that the same settings mean the same run.
pub const DEFAULT_BATCH_SIZE: usize = 128;
/// Multi-step factor.
pub const DEFAULT_GAMMA: f64 = 0.1;
pub const DEFAULT_MOMENTUM: f64 = 0.9;
pub const DEFAULT_WEIGHT_DECAY: f64 = 5e-4;
/// Epochs and peak learning rate of full-precision training.
pub const PRETRAIN_EPOCHS: usize = 8;
pub const PRETRAIN_LR: f64 = 0.1;
/// Epochs and peak learning rate of DGMS fine-tuning.
pub const DGMS_EPOCHS: usize = 4;
pub const DGMS_LR: f64 = 1e-3;
/// Mixture components by default (4-bit).
pub const DEFAULT_K: usize = 16;

/// Which schedule; turned into a [`crate::train::schedule::Schedule`]
/// once the number of steps is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    OneCycle,
    Cosine,
    MultiStep,
    Constant,
}

/// Mixture settings of a DGMS fine-tuning run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixtureSettings {
    /// Components per layer (K = 2^bits).
    pub k: usize,
    /// Temperature.
    pub tau: f32,
    /// Train tau as well.
    pub train_tau: bool,
    /// "Empirical" init: every sigma 0.01.
    pub empirical: bool,
    /// Layers with a mixture; `None` = the default (docs/METHOD.md#layers) (every conv
    /// but the first).
    pub layers: Option<Vec<String>>,
    /// Apply weight decay to the mixture parameters too (the reference
    /// does; off by default here).
    pub weight_decay: bool,
    /// Seed of the k-means restarts.
    pub init_seed: u64,
}

impl MixtureSettings {
    /// The defaults for K components (docs/METHOD.md#choices): tau 0.01 (fixed), cluster
    /// sigmas, every conv but the first, no decay on the mixture, seed 0.
    pub fn with_k(k: usize) -> Self {
        Self {
            k,
            tau: dgms_core::DEFAULT_TAU,
            train_tau: false,
            empirical: false,
            layers: None,
            weight_decay: false,
            init_seed: 0,
        }
    }
}

/// The baseline of a run (`dgms dgms --lsq`): a uniform grid with a learned
/// step per layer trained by the straight-through estimator, as LSQ
/// (`dgms_core::uniform`), instead of a mixture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UniformSettings {
    /// Bits per weight: 2^bits levels, as many as a mixture of K = 2^bits.
    pub bits: u32,
    /// Quantized layers; `None` = the mixture's default (every conv but
    /// the first).
    pub layers: Option<Vec<String>>,
}

impl UniformSettings {
    /// The grid with as many levels as a K-component mixture (K a power of
    /// two), on the default layers; `None` when K is not a power of two.
    pub fn with_levels(k: usize) -> Option<Self> {
        k.is_power_of_two().then(|| Self {
            bits: k.trailing_zeros(),
            layers: None,
        })
    }
}

/// Everything a training run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub model: String,
    /// Data source, e.g. `embedded`, `fashion-mnist:DIR`, `cifar10:DIR`.
    pub data: String,
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak (one-cycle) or base learning rate.
    pub lr: f64,
    pub schedule: ScheduleKind,
    /// Milestones in epochs, for multi-step.
    pub milestones: Vec<usize>,
    /// Factor applied at each milestone, for multi-step.
    pub gamma: f64,
    pub sgd: SgdConfig,
    pub seed: u64,
    /// Stop each epoch after this many batches (quick runs and tests).
    pub max_batches: Option<usize>,
    /// Evaluate on at most this many test images (quick runs and tests).
    pub max_eval: Option<usize>,
    pub out_dir: PathBuf,
    /// Full-precision checkpoint to start from.
    pub init_from: Option<PathBuf>,
    /// Mixture fine-tuning (None = full-precision training).
    pub mixture: Option<MixtureSettings>,
    /// The LSQ baseline instead of a mixture (absent in older configs).
    #[serde(default)]
    pub uniform: Option<UniformSettings>,
    /// Transforms of a folder data source (absent in older configs).
    #[serde(default)]
    pub images: ImageSettings,
}

impl RunConfig {
    /// Defaults of `dgms pretrain`.
    pub fn pretrain(model: &str, data: &str, out_dir: PathBuf) -> Self {
        Self {
            model: model.to_string(),
            data: data.to_string(),
            epochs: PRETRAIN_EPOCHS,
            batch_size: DEFAULT_BATCH_SIZE,
            lr: PRETRAIN_LR,
            schedule: ScheduleKind::OneCycle,
            milestones: vec![],
            gamma: DEFAULT_GAMMA,
            sgd: SgdConfig {
                momentum: DEFAULT_MOMENTUM,
                nesterov: true,
                weight_decay: DEFAULT_WEIGHT_DECAY,
            },
            seed: 0,
            max_batches: None,
            max_eval: None,
            out_dir,
            init_from: None,
            mixture: None,
            uniform: None,
            images: ImageSettings::default(),
        }
    }

    /// Defaults of `dgms dgms`: fine-tuning the full-precision weights in
    /// `init` (`None` when resuming) with `mixture`, [`DGMS_EPOCHS`] epochs
    /// at peak lr [`DGMS_LR`]. `cargo xtask train` starts from the same.
    pub fn dgms(
        model: &str,
        data: &str,
        out_dir: PathBuf,
        init: Option<PathBuf>,
        mixture: MixtureSettings,
    ) -> Self {
        Self {
            epochs: DGMS_EPOCHS,
            lr: DGMS_LR,
            init_from: init,
            mixture: Some(mixture),
            ..Self::pretrain(model, data, out_dir)
        }
    }
}

/// Largest batch size accepted (a sane bound: larger batches only exhaust
/// memory, and the size feeds allocations).
pub const MAX_BATCH_SIZE: usize = 65_536;
/// Fewest mixture components (a zero and one other value).
pub const MIN_K: usize = 2;

/// One hyper-parameter that is out of range, named by its command-line flag.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {value}: {expected}")]
pub struct InvalidSetting {
    /// The flag of `dgms pretrain` / `dgms dgms`, e.g. `--lr`.
    pub flag: &'static str,
    /// The value given, as written.
    pub value: String,
    /// What is accepted, e.g. "must be a finite number > 0".
    pub expected: String,
}

fn invalid(
    flag: &'static str,
    value: impl std::fmt::Display,
    expected: impl Into<String>,
) -> InvalidSetting {
    InvalidSetting {
        flag,
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// `value` must be finite and satisfy `ok`, described by `expected`.
fn check_f64(
    flag: &'static str,
    value: f64,
    ok: impl Fn(f64) -> bool,
    expected: &str,
) -> Result<(), InvalidSetting> {
    if value.is_finite() && ok(value) {
        Ok(())
    } else {
        Err(invalid(
            flag,
            value,
            format!("must be a finite number {expected}"),
        ))
    }
}

impl RunConfig {
    /// Checks every hyper-parameter before anything runs; the error names
    /// the command-line flag, the value and the accepted range.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.images.validate()?;
        if self.epochs == 0 {
            return Err(invalid("--epochs", self.epochs, "must be at least 1"));
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(invalid(
                "--batch-size",
                self.batch_size,
                format!("must be in 1..={MAX_BATCH_SIZE}"),
            ));
        }
        if self.max_batches == Some(0) {
            return Err(invalid("--max-batches", 0, "must be at least 1"));
        }
        if self.max_eval == Some(0) {
            return Err(invalid("--max-eval", 0, "must be at least 1"));
        }
        check_f64("--lr", self.lr, |v| v > 0.0, "> 0")?;
        check_f64(
            "--momentum",
            self.sgd.momentum,
            |v| (0.0..1.0).contains(&v),
            "in [0, 1)",
        )?;
        check_f64(
            "--weight-decay",
            self.sgd.weight_decay,
            |v| v >= 0.0,
            ">= 0",
        )?;
        check_f64("--gamma", self.gamma, |v| v > 0.0, "> 0")?;
        self.validate_milestones()?;
        if let Some(m) = &self.mixture {
            if !(MIN_K..=dgms_core::MAX_COMPONENTS).contains(&m.k) {
                return Err(invalid(
                    "--k",
                    m.k,
                    format!("must be in {MIN_K}..={}", dgms_core::MAX_COMPONENTS),
                ));
            }
            check_f64("--tau", f64::from(m.tau), |v| v > 0.0, "> 0")?;
        }
        if let Some(u) = &self.uniform {
            if self.mixture.is_some() {
                return Err(invalid(
                    "--lsq",
                    "with a mixture",
                    "the LSQ baseline replaces the mixture, not both",
                ));
            }
            let (lo, hi) = (dgms_core::uniform::MIN_BITS, dgms_core::uniform::MAX_BITS);
            if !(lo..=hi).contains(&u.bits) {
                return Err(invalid(
                    "--k",
                    1u64 << u.bits.min(63),
                    format!(
                        "with --lsq must be a power of two from {} to {}",
                        1 << lo,
                        1 << hi
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Milestones strictly increasing, each in 1..=epochs.
    fn validate_milestones(&self) -> Result<(), InvalidSetting> {
        let shown = || {
            self.milestones
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let in_range = self
            .milestones
            .iter()
            .all(|&m| (1..=self.epochs).contains(&m));
        if !in_range {
            return Err(invalid(
                "--milestones",
                shown(),
                format!("every milestone must be in 1..={} (--epochs)", self.epochs),
            ));
        }
        if self.milestones.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(
                "--milestones",
                shown(),
                "must be strictly increasing",
            ));
        }
        Ok(())
    }
}

/// A setting of a resumed run that differs from its checkpoint's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The command-line flag that sets it, e.g. `--lr` (or a description
    /// for a setting without one).
    pub flag: &'static str,
    /// The value asked for now and the checkpoint's, as JSON.
    pub requested: String,
    pub saved: String,
}

/// The flag that sets each field of [`RunConfig`] (nested fields dotted),
/// in the order the comparison reports them.
const FIELD_FLAGS: [(&str, &str); 28] = [
    ("model", "--model"),
    ("data", "--data"),
    ("images.resize", "--resize"),
    ("images.crop", "--crop"),
    ("images.random_resized_crop", "--random-resized-crop"),
    ("uniform", "--lsq"),
    ("uniform.bits", "--k"),
    ("uniform.layers", "--layers"),
    ("mixture", "the command (pretrain or dgms)"),
    ("mixture.k", "--k"),
    ("mixture.tau", "--tau"),
    ("mixture.train_tau", "--train-tau"),
    ("mixture.empirical", "--empirical"),
    ("mixture.layers", "--layers"),
    ("mixture.weight_decay", "--mixture-weight-decay"),
    ("mixture.init_seed", "--init-seed"),
    ("seed", "--seed"),
    ("epochs", "--epochs"),
    ("lr", "--lr"),
    ("schedule", "--schedule"),
    ("milestones", "--milestones"),
    ("gamma", "--gamma"),
    ("sgd.momentum", "--momentum"),
    ("sgd.nesterov", "--no-nesterov"),
    ("sgd.weight_decay", "--weight-decay"),
    ("batch_size", "--batch-size"),
    ("max_batches", "--max-batches"),
    ("max_eval", "--max-eval"),
];

/// The field at dotted `path` of a JSON object (`Null` when absent).
fn field<'v>(value: &'v serde_json::Value, path: &str) -> &'v serde_json::Value {
    path.split('.')
        .try_fold(value, |v, key| v.get(key))
        .unwrap_or(&serde_json::Value::Null)
}

/// A config as JSON, through text so that both sides of a comparison took
/// the same float parsing path (the saved one was read from text).
fn as_json(cfg: &RunConfig) -> serde_json::Value {
    serde_json::to_string(cfg)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null)
}

impl RunConfig {
    /// The first setting (in [`FIELD_FLAGS`] order, then `--init`) in which
    /// this config, asked of a resumed run, differs from `saved`, the
    /// checkpoint's; the run directory is not compared (a moved run
    /// directory resumes in its new place).
    pub fn resume_mismatch(&self, saved: &RunConfig) -> Option<Mismatch> {
        let (ours, theirs) = (as_json(self), as_json(saved));
        let fields = FIELD_FLAGS.iter().chain(&[("init_from", "--init")]);
        for &(path, flag) in fields {
            // A missing mixture on one side is reported once, as "mixture".
            // (The same for the LSQ baseline's settings.)
            let group = ["mixture", "uniform"]
                .into_iter()
                .find(|g| path.starts_with(&format!("{g}.")));
            if group.is_some_and(|g| field(&ours, g).is_null() || field(&theirs, g).is_null()) {
                continue;
            }
            let (a, b) = (field(&ours, path), field(&theirs, path));
            // "mixture" itself only says which command; its fields follow.
            let differs = match path {
                "mixture" | "uniform" => a.is_null() != b.is_null(),
                _ => a != b,
            };
            if differs {
                return Some(Mismatch {
                    flag,
                    requested: a.to_string(),
                    saved: b.to_string(),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RunConfig {
        RunConfig::pretrain("resnet20", "embedded", PathBuf::from("run"))
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(cfg().validate(), Ok(()));
        let dgms = RunConfig::dgms(
            "resnet20",
            "embedded",
            "r".into(),
            None,
            MixtureSettings::with_k(16),
        );
        assert_eq!(dgms.validate(), Ok(()));
    }

    #[test]
    fn every_bad_setting_names_its_flag() {
        type Edit = fn(&mut RunConfig);
        let cases: [(Edit, &str, &str); 17] = [
            (|c| c.lr = f64::NAN, "--lr NaN", "finite number > 0"),
            (|c| c.lr = 0.0, "--lr 0", "> 0"),
            (|c| c.lr = f64::INFINITY, "--lr inf", "finite"),
            (|c| c.sgd.momentum = 1.0, "--momentum 1", "[0, 1)"),
            (|c| c.sgd.momentum = -0.1, "--momentum -0.1", "[0, 1)"),
            (|c| c.sgd.weight_decay = -1.0, "--weight-decay -1", ">= 0"),
            (
                |c| c.sgd.weight_decay = f64::NAN,
                "--weight-decay NaN",
                "finite",
            ),
            (|c| c.gamma = 0.0, "--gamma 0", "> 0"),
            (|c| c.epochs = 0, "--epochs 0", "at least 1"),
            (|c| c.batch_size = 0, "--batch-size 0", "1..=65536"),
            (|c| c.batch_size = 65_537, "--batch-size 65537", "1..=65536"),
            (|c| c.max_batches = Some(0), "--max-batches 0", "at least 1"),
            (|c| c.max_eval = Some(0), "--max-eval 0", "at least 1"),
            (
                |c| c.milestones = vec![3, 2],
                "--milestones 3,2",
                "increasing",
            ),
            (|c| c.milestones = vec![0], "--milestones 0", "1..=8"),
            (|c| c.milestones = vec![9], "--milestones 9", "1..=8"),
            (
                |c| c.mixture = Some(MixtureSettings::with_k(1)),
                "--k 1",
                "2..=256",
            ),
        ];
        for (edit, starts, says) in cases {
            let mut c = cfg();
            edit(&mut c);
            let msg = c.validate().unwrap_err().to_string();
            assert!(msg.starts_with(starts) && msg.contains(says), "{msg}");
        }
        let mut c = cfg();
        c.mixture = Some(MixtureSettings {
            tau: f32::NAN,
            ..MixtureSettings::with_k(4)
        });
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--tau NaN"));
        let mut c = cfg();
        c.mixture = Some(MixtureSettings::with_k(257));
        assert!(c.validate().unwrap_err().to_string().starts_with("--k 257"));
    }

    #[test]
    fn resume_mismatch_names_the_flag_and_both_values() {
        let saved = cfg();
        let mut asked = saved.clone();
        asked.out_dir = PathBuf::from("elsewhere");
        assert_eq!(asked.resume_mismatch(&saved), None, "the directory is free");
        asked.sgd.momentum = 0.5;
        let m = asked.resume_mismatch(&saved).unwrap();
        assert_eq!(
            (m.flag, m.requested.as_str(), m.saved.as_str()),
            ("--momentum", "0.5", "0.9")
        );
        let mut asked = saved.clone();
        asked.mixture = Some(MixtureSettings::with_k(4));
        assert_eq!(
            asked.resume_mismatch(&saved).unwrap().flag,
            "the command (pretrain or dgms)"
        );
        let mut dgms = saved.clone();
        dgms.mixture = Some(MixtureSettings::with_k(4));
        let mut asked = dgms.clone();
        asked.mixture.as_mut().unwrap().k = 8;
        let m = asked.resume_mismatch(&dgms).unwrap();
        assert_eq!(
            (m.flag, m.requested.as_str(), m.saved.as_str()),
            ("--k", "8", "4")
        );
        let mut asked = saved.clone();
        asked.max_batches = Some(3);
        let m = asked.resume_mismatch(&saved).unwrap();
        assert_eq!(
            (m.flag, m.requested.as_str(), m.saved.as_str()),
            ("--max-batches", "3", "null")
        );
    }
}
