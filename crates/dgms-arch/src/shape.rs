//! Shape inference over a description: checks that each layer's input has
//! the channels it expects and that every map stays at least 1x1.

use crate::layer::{Layer, Shortcut};

/// Per-image shape of an activation; features after pooling or
/// flattening are c x 1 x 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

/// A failure: the layer's name and what is wrong.
pub(crate) type ShapeError = (String, String);

fn fail(layer: &str, what: String) -> ShapeError {
    (layer.to_string(), what)
}

/// The shape after `layers`, run on `x`.
pub(crate) fn infer(layers: &[Layer], mut x: Shape) -> Result<Shape, ShapeError> {
    for layer in layers {
        x = infer_one(layer, x)?;
    }
    Ok(x)
}

fn infer_one(layer: &Layer, x: Shape) -> Result<Shape, ShapeError> {
    match layer {
        Layer::Conv(c) => {
            if x.c != c.in_channels {
                return Err(fail(
                    &c.name,
                    format!("input has {} channels, expected {}", x.c, c.in_channels),
                ));
            }
            if c.groups == 0
                || c.stride == 0
                || c.kernel == 0
                || !c.in_channels.is_multiple_of(c.groups)
                || !c.out_channels.is_multiple_of(c.groups)
            {
                return Err(fail(&c.name, format!("invalid convolution {c:?}")));
            }
            let out = |len: usize| {
                (len + 2 * c.padding)
                    .checked_sub(c.kernel)
                    .map(|d| d / c.stride + 1)
            };
            match (out(x.h), out(x.w)) {
                (Some(h), Some(w)) => Ok(Shape {
                    c: c.out_channels,
                    h,
                    w,
                }),
                _ => Err(fail(
                    &c.name,
                    format!("input {}x{}x{} is too small", x.c, x.h, x.w),
                )),
            }
        }
        Layer::BatchNorm(bn) if bn.channels != x.c => Err(fail(
            &bn.name,
            format!("input has {} channels, expected {}", x.c, bn.channels),
        )),
        Layer::BatchNorm(_) | Layer::Act(_) | Layer::Dropout(_) => Ok(x),
        Layer::MaxPool(p) => {
            let (h, w) = (p.out_len(x.h), p.out_len(x.w));
            if h == 0 || w == 0 || 2 * p.padding > p.kernel {
                return Err(fail(
                    &p.name,
                    format!("cannot max-pool a {}x{} map", x.h, x.w),
                ));
            }
            Ok(Shape { c: x.c, h, w })
        }
        Layer::Block(b) => {
            let out = infer(&b.body, x)?;
            let short = match &b.shortcut {
                None => return Ok(out),
                Some(Shortcut::Identity) => x,
                Some(Shortcut::ZeroPad { stride, pad }) => {
                    if *stride == 0 {
                        return Err(fail(&b.name, "shortcut stride 0".into()));
                    }
                    Shape {
                        c: x.c + 2 * pad,
                        h: (x.h - 1) / stride + 1,
                        w: (x.w - 1) / stride + 1,
                    }
                }
                Some(Shortcut::Projection(p)) => infer(p, x)?,
            };
            if short != out {
                return Err(fail(
                    &b.name,
                    format!(
                        "the shortcut gives {}x{}x{}, the body {}x{}x{}",
                        short.c, short.h, short.w, out.c, out.h, out.w
                    ),
                ));
            }
            Ok(out)
        }
        Layer::GlobalAvgPool => Ok(Shape { c: x.c, h: 1, w: 1 }),
        Layer::Flatten => Ok(Shape {
            c: x.c * x.h * x.w,
            h: 1,
            w: 1,
        }),
        Layer::Linear(l) => {
            if (x.h, x.w) != (1, 1) || x.c != l.in_features {
                return Err(fail(
                    &l.name,
                    format!(
                        "input is {}x{}x{}, expected {} features (pooled or flattened)",
                        x.c, x.h, x.w, l.in_features
                    ),
                ));
            }
            Ok(Shape {
                c: l.out_features,
                h: 1,
                w: 1,
            })
        }
    }
}
