//! Pictures of mixture layers (`dgms report --plot`, and the main job's
//! pictures of `cargo xtask train`): what is known of one layer — its
//! weights, its mixtures, its hard levels — turned into a dgms-plot
//! [`LayerPlot`], and one PNG per layer written into a directory.
//!
//! What `dgms report` knows, and so draws:
//!
//! - a DGMS checkpoint (this project's or the DGMS authors'): the weights
//!   as trained (soft, before hardening), the mixture as trained ("after
//!   DGMS"), and the hard levels the report hardens them to;
//! - a hardened checkpoint: only the hard weights and their table (its
//!   mixtures are not kept), so the histogram is the count per level and
//!   no curve is drawn.
//!
//! The mixture *before* DGMS (the k-means initialisation) is never drawn
//! by the report: no checkpoint keeps it, and recomputing it from the
//! pretrained file a run names (`config.init_from`) would trust that the
//! file is unchanged, which nothing records (no fingerprint; a pretrain run
//! can be continued into the same directory). `cargo xtask train`, which
//! has just made both files, draws it ([`LayerPicture::initial`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::DType;
use dgms_core::{HardenedLayer, MixtureParams};
use dgms_plot::{layer_png, LayerPlot, MixtureCurve};

use crate::error::{Result, TrainError};
use crate::train::session::Model;

/// Legend of the mixture at initialisation.
pub const INITIAL_LABEL: &str = "initialisation (k-means)";
/// Legend of the trained mixture.
pub const TRAINED_LABEL: &str = "after DGMS";

/// What is known of one mixture layer for its picture.
#[derive(Clone, Debug)]
pub struct LayerPicture {
    /// The layer's name, e.g. `layer1.0.conv1`.
    pub layer: String,
    /// The weights of the histogram: as trained (soft) when the mixture is
    /// known, the hard weights of a hardened checkpoint otherwise.
    pub weights: Vec<f32>,
    /// The mixture at initialisation (before DGMS), when genuinely known.
    pub initial: Option<MixtureParams>,
    /// The trained mixture; `None` for a hardened checkpoint.
    pub trained: Option<MixtureParams>,
    /// The hard levels: the table the weights harden to (0 and the means).
    pub levels: Vec<f32>,
}

impl LayerPicture {
    /// The picture as dgms-plot draws it: initial mixture first (when
    /// known), then the trained one, and the hard levels.
    pub fn plot(&self) -> LayerPlot<'_> {
        let curves = [
            (INITIAL_LABEL, &self.initial),
            (TRAINED_LABEL, &self.trained),
        ]
        .into_iter()
        .filter_map(|(label, params)| {
            params.as_ref().map(|p| MixtureCurve {
                label: label.to_string(),
                params: p.clone(),
            })
        })
        .collect();
        LayerPlot {
            layer: &self.layer,
            weights: &self.weights,
            curves,
            levels: Some(self.levels.clone()),
        }
    }
}

/// The file name of `layer`'s picture: the name with every character but
/// ASCII letters, digits, `.`, `-` and `_` replaced by `_` (so that a
/// layer name from a foreign checkpoint cannot leave the directory), and
/// `.png`, e.g. `layer1.0.conv1.png`.
pub fn picture_file_name(layer: &str) -> String {
    let mut name: String = layer
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    // No hidden file, and never `.` or `..` (a name of dots alone).
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, '_');
    }
    name + ".png"
}

/// Writes one PNG per layer into `dir` (created if missing), each
/// atomically, named by [`picture_file_name`]; two layers whose names
/// sanitise alike get `-2`, `-3`... rather than overwrite each other.
/// Returns the paths written, in the order of `pictures`.
pub fn write_layer_pictures(dir: &Path, pictures: &[LayerPicture]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(TrainError::io("creating directory", dir))?;
    let mut taken = HashSet::new();
    let mut written = Vec::with_capacity(pictures.len());
    for picture in pictures {
        let base = picture_file_name(&picture.layer);
        let mut name = base.clone();
        let mut n = 1;
        while !taken.insert(name.clone()) {
            n += 1;
            name = format!("{}-{n}.png", base.trim_end_matches(".png"));
        }
        let path = dir.join(name);
        layer_png(&path, &picture.plot())?;
        written.push(path);
    }
    Ok(written)
}

/// The pictures of `model`'s mixture layers as they stand (weights and
/// mixtures as trained), before hardening; their levels are filled in by
/// [`with_levels`].
pub(crate) fn of_mixtures(model: &Model) -> Result<Vec<LayerPicture>> {
    let mut pictures = Vec::new();
    for (name, mixture) in model.net.mixtures() {
        let conv = model.conv(&name)?;
        let weights = conv
            .weight()
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1()?;
        pictures.push(LayerPicture {
            layer: name,
            weights,
            initial: None,
            trained: Some(mixture.params()?),
            levels: Vec::new(),
        });
    }
    Ok(pictures)
}

/// `pictures` with the levels of the layers hardened from them (matched
/// by name).
pub(crate) fn with_levels(
    mut pictures: Vec<LayerPicture>,
    hardened: &[HardenedLayer],
) -> Vec<LayerPicture> {
    for picture in &mut pictures {
        if let Some(h) = hardened.iter().find(|h| h.name == picture.layer) {
            picture.levels.clone_from(&h.table);
        }
    }
    pictures
}

/// The pictures of a hardened checkpoint's layers: hard weights and their
/// table, no mixture (a hardened checkpoint keeps none).
pub(crate) fn of_hardened(hardened: &[HardenedLayer]) -> Vec<LayerPicture> {
    hardened
        .iter()
        .map(|h| LayerPicture {
            layer: h.name.clone(),
            weights: h.decode(),
            initial: None,
            trained: None,
            levels: h.table.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_in_the_directory() {
        assert_eq!(picture_file_name("layer1.0.conv1"), "layer1.0.conv1.png");
        assert_eq!(picture_file_name("features/3 conv"), "features_3_conv.png");
        assert_eq!(picture_file_name(".."), "_...png");
        assert_eq!(picture_file_name(""), "_.png");
        assert_eq!(picture_file_name("../x"), "_.._x.png");
    }

    fn params() -> MixtureParams {
        MixtureParams {
            mu: vec![-0.1, 0.1],
            sigma: vec![0.03, 0.03],
            pi: vec![0.3, 0.3],
            pi_zero: 0.4,
            sigma_zero: 0.02,
            tau: 0.01,
        }
    }

    #[test]
    fn the_plot_draws_what_is_known() {
        let mut picture = LayerPicture {
            layer: "l".into(),
            weights: vec![0.0, 0.1],
            initial: None,
            trained: Some(params()),
            levels: vec![-0.1, 0.0, 0.1],
        };
        let labels = |p: &LayerPicture| -> Vec<String> {
            p.plot().curves.into_iter().map(|c| c.label).collect()
        };
        assert_eq!(labels(&picture), [TRAINED_LABEL]);
        picture.initial = Some(params());
        assert_eq!(labels(&picture), [INITIAL_LABEL, TRAINED_LABEL]);
        picture.initial = None;
        picture.trained = None;
        assert!(labels(&picture).is_empty());
        assert_eq!(picture.plot().levels, Some(vec![-0.1, 0.0, 0.1]));
    }

    #[test]
    fn names_that_sanitise_alike_do_not_overwrite_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let picture = |layer: &str| LayerPicture {
            layer: layer.into(),
            weights: vec![-0.1, 0.0, 0.1],
            initial: None,
            trained: Some(params()),
            levels: vec![-0.1, 0.0, 0.1],
        };
        let written =
            write_layer_pictures(&dir.path().join("new"), &[picture("a/b"), picture("a b")])
                .unwrap();
        let names: Vec<_> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["a_b.png", "a_b-2.png"]);
        assert!(written.iter().all(|p| p.is_file()));
    }
}
