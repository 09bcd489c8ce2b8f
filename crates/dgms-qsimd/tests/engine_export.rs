//! The graph export (`engine::export`, what the ONNX Runtime peer of the
//! bench builds its graph from) computes the engine's function: a naive
//! interpreter of the exported ops, written from their documented
//! semantics, gives the reference engine's logits. Also the per-op
//! profile: one entry per op, named.

mod engine_util;

use std::collections::HashMap;

use dgms_qsimd::engine::export::{export, ExportedOp};
use dgms_qsimd::engine::{reference, Engine};
use dgms_qsimd::format::PackedModel;
use dgms_qsimd::kernels::Isa;
use dgms_test_support::compare::rel_diff;
use engine_util::{images, mobilenet_v2, resnet18, resnet50, resnet_cifar};

/// An activation: c x h x w of one image.
#[derive(Clone)]
struct Map {
    c: usize,
    h: usize,
    w: usize,
    v: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn conv(
    x: &Map,
    w: &[f32],
    out_c: usize,
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
) -> Map {
    let (oh, ow) = (
        (x.h + 2 * pad - k) / stride + 1,
        (x.w + 2 * pad - k) / stride + 1,
    );
    let cg = x.c / groups;
    let og = out_c / groups;
    let mut v = vec![0f32; out_c * oh * ow];
    for o in 0..out_c {
        let g = o / og;
        for (oy, ox) in (0..oh).flat_map(|y| (0..ow).map(move |x| (y, x))) {
            let mut acc = 0f32;
            for ci in 0..cg {
                for (ky, kx) in (0..k).flat_map(|a| (0..k).map(move |b| (a, b))) {
                    let (iy, ix) = (
                        (oy * stride + ky) as isize - pad as isize,
                        (ox * stride + kx) as isize - pad as isize,
                    );
                    if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                        continue;
                    }
                    let xv = x.v[((g * cg + ci) * x.h + iy as usize) * x.w + ix as usize];
                    acc += xv * w[((o * cg + ci) * k + ky) * k + kx];
                }
            }
            v[(o * oh + oy) * ow + ox] = acc;
        }
    }
    Map {
        c: out_c,
        h: oh,
        w: ow,
        v,
    }
}

/// Runs the exported graph on one image.
fn interpret(model: &PackedModel, image: &[f32]) -> Vec<f32> {
    let g = export(model).unwrap();
    let t: HashMap<&str, &[f32]> = g
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.data.as_slice()))
        .collect();
    let [c, h, w] = g.input_shape;
    let mut acts: HashMap<String, Map> = HashMap::new();
    acts.insert(
        "input".into(),
        Map {
            c,
            h,
            w,
            v: image.to_vec(),
        },
    );
    for op in &g.ops {
        let (out, y) = match op {
            ExportedOp::Conv {
                input,
                output,
                weight,
                kernel,
                stride,
                pad,
                groups,
                scale,
                shift,
                residual,
                activation,
                ..
            } => {
                let x = &acts[input];
                let wt = t[weight.as_str()];
                let out_c = wt.len() / (x.c / groups * kernel * kernel);
                let mut y = conv(x, wt, out_c, *kernel, *stride, *pad, *groups);
                let hw = y.h * y.w;
                for (i, v) in y.v.iter_mut().enumerate() {
                    let ch = i / hw;
                    *v = *v * scale.as_ref().map_or(1.0, |s| t[s.as_str()][ch])
                        + shift.as_ref().map_or(0.0, |s| t[s.as_str()][ch])
                        + residual.as_ref().map_or(0.0, |r| acts[r].v[i]);
                    *v = match *activation {
                        "relu" => v.max(0.0),
                        "relu6" => v.clamp(0.0, 6.0),
                        _ => *v,
                    };
                }
                (output, y)
            }
            ExportedOp::MaxPool {
                input,
                output,
                kernel,
                stride,
                pad,
                ..
            } => {
                let x = &acts[input];
                let (oh, ow) = (
                    (x.h + 2 * pad - kernel) / stride + 1,
                    (x.w + 2 * pad - kernel) / stride + 1,
                );
                let mut v = vec![f32::NEG_INFINITY; x.c * oh * ow];
                for ch in 0..x.c {
                    for (oy, ox) in (0..oh).flat_map(|y| (0..ow).map(move |x| (y, x))) {
                        for (ky, kx) in (0..*kernel).flat_map(|a| (0..*kernel).map(move |b| (a, b)))
                        {
                            let (iy, ix) = (
                                (oy * stride + ky) as isize - *pad as isize,
                                (ox * stride + kx) as isize - *pad as isize,
                            );
                            if iy >= 0 && ix >= 0 && iy < x.h as isize && ix < x.w as isize {
                                let o = &mut v[(ch * oh + oy) * ow + ox];
                                *o = o.max(x.v[(ch * x.h + iy as usize) * x.w + ix as usize]);
                            }
                        }
                    }
                }
                (
                    output,
                    Map {
                        c: x.c,
                        h: oh,
                        w: ow,
                        v,
                    },
                )
            }
            ExportedOp::GlobalAvgPool { input, output, .. } => {
                let x = &acts[input];
                let hw = x.h * x.w;
                let v =
                    x.v.chunks(hw)
                        .map(|p| p.iter().sum::<f32>() / hw as f32)
                        .collect();
                (
                    output,
                    Map {
                        c: x.c,
                        h: 1,
                        w: 1,
                        v,
                    },
                )
            }
            ExportedOp::Flatten { input, output, .. } => {
                let x = acts[input].clone();
                (
                    output,
                    Map {
                        c: x.v.len(),
                        h: 1,
                        w: 1,
                        v: x.v,
                    },
                )
            }
            ExportedOp::Linear {
                input,
                output,
                weight,
                bias,
                ..
            } => {
                let x = &acts[input];
                let b = t[bias.as_str()];
                let wt = t[weight.as_str()];
                let v = b
                    .iter()
                    .enumerate()
                    .map(|(o, b)| {
                        b + x
                            .v
                            .iter()
                            .zip(&wt[o * x.v.len()..])
                            .map(|(a, w)| a * w)
                            .sum::<f32>()
                    })
                    .collect();
                (
                    output,
                    Map {
                        c: b.len(),
                        h: 1,
                        w: 1,
                        v,
                    },
                )
            }
        };
        acts.insert(out.clone(), y);
    }
    acts.remove(&g.output).unwrap().v
}

fn check(model: &PackedModel) {
    let shape: [usize; 3] = model.meta.input_shape.as_slice().try_into().unwrap();
    let x = images(1, shape, 3);
    let want = reference::engine(model).unwrap().run(&x, 1).unwrap();
    let got = interpret(model, &x);
    let d = rel_diff(&got, &want);
    println!(
        "{}: exported graph vs reference engine, max rel diff {d:.2e}",
        model.meta.arch
    );
    assert!(d <= 1e-4, "{}: {d}", model.meta.arch);
}

#[test]
fn exported_resnet18_computes_the_engine_function() {
    check(&resnet18(32, 10, 5));
}

#[test]
fn exported_resnet50_computes_the_engine_function() {
    check(&resnet50(32, 10, 6));
}

#[test]
fn exported_mobilenet_v2_computes_the_engine_function() {
    check(&mobilenet_v2(32, 10, 7));
}

#[test]
fn option_a_shortcuts_have_no_export() {
    let err = export(&resnet_cifar(3, [3, 32, 32], 10, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no export for option-A shortcuts"), "{err}");
}

#[test]
fn profile_has_one_named_entry_per_op() {
    let model = resnet18(32, 10, 5);
    let x = images(1, [3, 32, 32], 3);
    let mut engine = Engine::new(&model, Isa::detect()).unwrap();
    let times = engine.profile(&x, 1).unwrap();
    assert_eq!(times.len(), export(&model).unwrap().ops.len());
    assert_eq!(times[0].name, "conv1");
    assert_eq!(times[0].kind, "conv7x7 s2");
    assert!(times.iter().all(|t| t.ms >= 0.0));
    assert!(times.iter().any(|t| t.kind == "linear"));
    assert!(engine.profile(&x[1..], 1).is_err());
}
