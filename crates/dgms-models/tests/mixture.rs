//! Mixture mode: layer selection, soft weights in training (with gradients
//! to weights and every mixture Var), hard weights in evaluation.

mod common;

use candle_core::{DType, Tensor};
use common::{from_tensors, resnet20_io, resnet20_on_varmap, resnet20_params};
use dgms_core::{InitConfig, MixtureOptions};
use dgms_models::{DgmsModel, LayerSelection, ModelConfig, ModelError};
use dgms_test_support::tensors::rel_diff_tensors;

fn init(k: usize) -> InitConfig {
    InitConfig {
        k,
        ..InitConfig::default()
    }
}

/// The fixture parameters with every conv weight that has a mixture replaced
/// by `f(mixture, weight)`.
fn substituted(
    model: &dyn DgmsModel,
    f: impl Fn(&dgms_core::GaussianMixture, &Tensor) -> Tensor,
) -> std::collections::HashMap<String, Tensor> {
    let mut params = resnet20_params();
    for conv in model.convs() {
        if let Some(m) = conv.mixture() {
            params.insert(format!("{}.weight", conv.name()), f(&m, conv.weight()));
        }
    }
    params
}

#[test]
fn default_selection_skips_first_conv_and_classifier() {
    let (model, _vm) = resnet20_on_varmap();
    let opts = MixtureOptions::default();
    let outcomes = model
        .enable_mixtures(&init(16), &opts, &LayerSelection::default())
        .unwrap();
    let convs = model.convs();
    assert_eq!(convs.len(), 19);
    assert_eq!(outcomes.len(), 18);
    assert_eq!(convs[0].name(), "conv1");
    assert!(!convs[0].has_mixture());
    assert!(convs[1..].iter().all(|c| c.has_mixture()));
    assert_eq!(model.classifier_name(), "linear");
    assert!(model.conv("linear").is_none());
    let names: Vec<String> = model.mixtures().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, model.default_mixture_layers());
    assert!(outcomes.iter().all(|o| o.params.k() == 16));
    // Checkpoint names: `<layer>.<param>`, six tensors per mixture.
    let vars = model.mixture_vars();
    assert_eq!(vars.len(), 18 * 6);
    assert!(vars.iter().any(|(n, _)| n == "layer1.0.conv1.mu"));
    assert!(vars.iter().any(|(n, _)| n == "layer3.2.conv2.tau"));
    // tau is fixed by default: five trainable Vars per layer.
    assert_eq!(model.mixture_trainable_vars().len(), 18 * 5);
}

#[test]
fn train_forward_uses_soft_weights_and_reaches_every_var() {
    let (model, _vm) = resnet20_on_varmap();
    let opts = MixtureOptions::default();
    model
        .enable_mixtures(&init(16), &opts, &LayerSelection::default())
        .unwrap();
    let (x, _) = resnet20_io();
    let logits = model.forward_t(&x, true).unwrap();

    // The same network with the soft weights substituted, in train mode
    // (batch statistics, so the running statistics do not matter).
    let soft = substituted(model.as_ref(), |m, w| m.soft_weights(w).unwrap().detach());
    let plain = from_tensors("resnet20", &ModelConfig::default(), soft);
    let expected = plain.forward_t(&x, true).unwrap();
    let err = rel_diff_tensors(&logits, &expected);
    assert!(err < 1e-5, "train logits vs soft-substituted: {err:e}");

    let labels = Tensor::new(&[0u32, 3, 5, 9], x.device()).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
    let grads = loss.backward().unwrap();
    for conv in model.convs() {
        let var = conv.weight_var().expect("weights are Vars on a VarMap");
        let g = grads.get(var.as_tensor());
        assert!(g.is_some(), "no gradient for {}.weight", conv.name());
        let norm = g.unwrap().sqr().unwrap().sum_all().unwrap();
        assert!(norm.to_scalar::<f32>().unwrap().is_finite());
    }
    for (layer, m) in model.mixtures() {
        for (name, var) in m.named_vars() {
            if name == "tau" {
                continue; // fixed by default
            }
            let g = grads.get(var.as_tensor());
            assert!(g.is_some(), "no gradient for {layer}.{name}");
            let v: Vec<f32> = g.unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert!(v.iter().all(|x| x.is_finite()), "{layer}.{name}: {v:?}");
        }
    }
}

#[test]
fn eval_forward_equals_hard_weight_model() {
    let (model, _vm) = resnet20_on_varmap();
    let (x, fp_logits) = resnet20_io();
    let opts = MixtureOptions::default();
    model
        .enable_mixtures(&init(4), &opts, &LayerSelection::default())
        .unwrap();
    let logits = model.forward_t(&x, false).unwrap();

    let hard = substituted(model.as_ref(), |m, w| m.hard_weights(w).unwrap());
    let plain = from_tensors("resnet20", &ModelConfig::default(), hard);
    let expected = plain.forward_t(&x, false).unwrap();
    let err = rel_diff_tensors(&logits, &expected);
    assert!(err < 1e-6, "eval logits vs hard-substituted: {err:e}");
    // With K = 4 the hard weights do change the network.
    assert!(rel_diff_tensors(&logits, &fp_logits) > 1e-3);
    // Hard weights take at most K values per layer, one of them 0.
    let conv = model.conv("layer2.1.conv1").unwrap();
    let mut values: Vec<f32> = conv
        .hard_weight()
        .unwrap()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    values.sort_by(f32::total_cmp);
    values.dedup();
    assert!(values.len() <= 4 && values.contains(&0.0), "{values:?}");

    // Without mixtures the model is the full-precision one again.
    model.disable_mixtures();
    assert!(model.mixtures().is_empty());
    let err = rel_diff_tensors(&model.forward_t(&x, false).unwrap(), &fp_logits);
    assert!(err < 1e-4, "after disable_mixtures: {err:e}");
}

#[test]
fn selection_by_names_predicate_and_k_per_layer() {
    let (model, _vm) = resnet20_on_varmap();
    let opts = MixtureOptions::default();
    let sel = LayerSelection::names(["layer3.2.conv2", "conv1"]).with_k("conv1", 4);
    let outcomes = model.enable_mixtures(&init(8), &opts, &sel).unwrap();
    // Forward order, whatever the order of the list.
    let ks: Vec<usize> = outcomes.iter().map(|o| o.params.k()).collect();
    assert_eq!(ks, vec![4, 8]);
    let names: Vec<String> = model.mixtures().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["conv1", "layer3.2.conv2"]);

    model.disable_mixtures();
    let sel = LayerSelection::predicate(|_, c| c.name().starts_with("layer3."));
    assert_eq!(
        model.enable_mixtures(&init(8), &opts, &sel).unwrap().len(),
        6
    );

    model.disable_mixtures();
    assert_eq!(
        model
            .enable_mixtures(&init(8), &opts, &LayerSelection::all())
            .unwrap()
            .len(),
        19
    );
}

#[test]
fn selection_errors_name_the_layer_and_change_nothing() {
    let (model, _vm) = resnet20_on_varmap();
    let opts = MixtureOptions::default();

    let err = model
        .enable_mixtures(&init(8), &opts, &LayerSelection::names(["layer4.0.conv1"]))
        .unwrap_err();
    assert!(matches!(err, ModelError::UnknownLayer { .. }));
    let msg = err.to_string();
    assert!(msg.contains("`layer4.0.conv1`"), "{msg}");
    assert!(msg.contains("layer3.2.conv2"), "{msg}");

    let err = model
        .enable_mixtures(
            &init(8),
            &opts,
            &LayerSelection::default().with_k("conv1", 4),
        )
        .unwrap_err();
    assert!(err.to_string().contains("layer `conv1`: K = 4"), "{err}");

    let f64_opts = MixtureOptions {
        dtype: DType::F64,
        ..MixtureOptions::default()
    };
    let err = model
        .enable_mixtures(&init(8), &f64_opts, &LayerSelection::default())
        .unwrap_err();
    assert!(err.to_string().contains("layer `layer1.0.conv1`"), "{err}");

    // K = 1 fails in dgms-core, naming the layer.
    let err = model
        .enable_mixtures(&init(1), &opts, &LayerSelection::default())
        .unwrap_err();
    assert!(err.to_string().contains("K = 1"), "{err}");
    assert!(model.mixtures().is_empty());
}
