//! Which convolutions get a mixture, with which K, and their initialisation.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use candle_core::DType;
use dgms_core::init::init_layers;
use dgms_core::{GaussianMixture, InitConfig, InitOutcome, MixtureOptions};

use crate::error::{ModelError, Result};
use crate::qconv::QConv2d;

/// A predicate over (index in forward order, convolution).
pub type LayerPredicate = Arc<dyn Fn(usize, &QConv2d) -> bool + Send + Sync>;

#[derive(Clone)]
enum Which {
    AllButFirst,
    All,
    Names(Vec<String>),
    Predicate(LayerPredicate),
}

/// The convolutions that get a mixture and, optionally, K per layer (the
/// others use `InitConfig::k`).
///
/// The default (docs/METHOD.md#layers): every convolution except the network's
/// first; the classifier is not a convolution and always stays full
/// precision.
#[derive(Clone)]
pub struct LayerSelection {
    which: Which,
    k: BTreeMap<String, usize>,
}

impl Default for LayerSelection {
    fn default() -> Self {
        Self {
            which: Which::AllButFirst,
            k: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for LayerSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let which = match &self.which {
            Which::AllButFirst => "all convolutions but the first".to_string(),
            Which::All => "all convolutions".to_string(),
            Which::Names(n) => format!("{n:?}"),
            Which::Predicate(_) => "a predicate".to_string(),
        };
        f.debug_struct("LayerSelection")
            .field("which", &which)
            .field("k", &self.k)
            .finish()
    }
}

impl LayerSelection {
    /// Every convolution, the first included.
    pub fn all() -> Self {
        Self {
            which: Which::All,
            ..Self::default()
        }
    }

    /// Exactly the named convolutions (parameter-name prefixes such as
    /// `layer1.0.conv1`); an unknown name is an error when resolved.
    pub fn names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            which: Which::Names(names.into_iter().map(Into::into).collect()),
            ..Self::default()
        }
    }

    /// The convolutions for which `f(index, conv)` is true.
    pub fn predicate(f: impl Fn(usize, &QConv2d) -> bool + Send + Sync + 'static) -> Self {
        Self {
            which: Which::Predicate(Arc::new(f)),
            ..Self::default()
        }
    }

    /// Uses K = `k` for `layer` (which must be selected).
    pub fn with_k(mut self, layer: impl Into<String>, k: usize) -> Self {
        self.k.insert(layer.into(), k);
        self
    }

    /// The selected convolutions as (index in `convs`, K), in forward order.
    /// Errors on a name (in the list or the K map) that is not a convolution
    /// of the model, and on a K for an unselected layer.
    pub fn resolve(
        &self,
        model: &str,
        convs: &[&QConv2d],
        default_k: usize,
    ) -> Result<Vec<(usize, usize)>> {
        let known = || convs.iter().map(|c| c.name().to_string()).collect();
        let check_known = |layer: &str| -> Result<()> {
            if convs.iter().any(|c| c.name() == layer) {
                Ok(())
            } else {
                Err(ModelError::UnknownLayer {
                    model: model.to_string(),
                    layer: layer.to_string(),
                    known: known(),
                })
            }
        };
        if let Which::Names(names) = &self.which {
            names.iter().try_for_each(|n| check_known(n))?;
        }
        self.k.keys().try_for_each(|n| check_known(n))?;
        let selected: Vec<usize> = (0..convs.len())
            .filter(|&i| match &self.which {
                Which::AllButFirst => i > 0,
                Which::All => true,
                Which::Names(names) => names.iter().any(|n| n == convs[i].name()),
                Which::Predicate(f) => f(i, convs[i]),
            })
            .collect();
        for (layer, &k) in &self.k {
            if !selected.iter().any(|&i| convs[i].name() == layer) {
                return Err(ModelError::KForUnselectedLayer {
                    layer: layer.clone(),
                    k,
                });
            }
        }
        Ok(selected
            .into_iter()
            .map(|i| {
                let k = self.k.get(convs[i].name()).copied().unwrap_or(default_k);
                (i, k)
            })
            .collect())
    }
}

/// [`crate::DgmsModel::enable_mixtures`]: every mixture is built before any
/// is set, so a failure leaves the model unchanged.
pub(crate) fn enable(
    model: &str,
    convs: &[&QConv2d],
    init: &InitConfig,
    opts: &MixtureOptions,
    selection: &LayerSelection,
) -> Result<Vec<InitOutcome>> {
    let chosen = selection.resolve(model, convs, init.k)?;
    let mut host = Vec::with_capacity(chosen.len());
    for &(i, _) in &chosen {
        let w = convs[i].weight();
        if w.dtype() != opts.dtype {
            return Err(ModelError::DTypeMismatch {
                layer: convs[i].name().to_string(),
                weights: w.dtype(),
                mixture: opts.dtype,
            });
        }
        let v: Vec<f32> = w.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        host.push(v);
    }
    // init_layers takes one config, so layers are initialised in parallel
    // within each group of equal K.
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (pos, &(_, k)) in chosen.iter().enumerate() {
        groups.entry(k).or_default().push(pos);
    }
    let mut outcomes: Vec<Option<InitOutcome>> = vec![None; chosen.len()];
    for (k, members) in groups {
        let layers: Vec<(&str, &[f32])> = members
            .iter()
            .map(|&p| (convs[chosen[p].0].name(), host[p].as_slice()))
            .collect();
        let cfg = InitConfig { k, ..init.clone() };
        for (p, outcome) in members.iter().zip(init_layers(&layers, &cfg)?) {
            outcomes[*p] = Some(outcome);
        }
    }
    let outcomes: Vec<InitOutcome> = outcomes.into_iter().flatten().collect();
    let mixtures = chosen
        .iter()
        .zip(&outcomes)
        .map(|(&(i, _), o)| {
            // Each mixture lives where its layer's weights live.
            let opts = MixtureOptions {
                device: convs[i].weight().device().clone(),
                ..opts.clone()
            };
            GaussianMixture::new(convs[i].name(), &o.params, &opts)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    for (&(i, _), m) in chosen.iter().zip(mixtures) {
        convs[i].set_mixture(Some(m));
    }
    Ok(outcomes)
}
