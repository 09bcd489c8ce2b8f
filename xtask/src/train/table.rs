//! The main job's table and the check of the method's claim per width.

use serde::Serialize;

use super::Summary;

/// PTQ this many points or more below FP32 is a loss DGMS must recover.
const PTQ_LOSS_POINTS: f64 = 1.0;
/// Where PTQ is within noise of FP32, DGMS must stay this close to FP32.
const NEAR_FP32_POINTS: f64 = 0.5;
/// Significance level of the paired test.
const ALPHA: f64 = 0.05;

/// Whether a width shows what the method claims: where post-training
/// quantization loses more than [`PTQ_LOSS_POINTS`] of top-1, DGMS is above
/// it with McNemar p < [`ALPHA`]; where it does not, DGMS stays within
/// [`NEAR_FP32_POINTS`] of FP32.
#[derive(Clone, Debug, Serialize)]
pub struct Claim {
    pub holds: bool,
    /// What was checked, in words.
    pub rule: String,
}

impl Claim {
    pub fn judge(fp32: f64, ptq: f64, dgms: f64, p: f64) -> Self {
        if fp32 - ptq > PTQ_LOSS_POINTS {
            Self {
                holds: dgms > ptq && p < ALPHA,
                rule: format!(
                    "PTQ {:.2} points below FP32: DGMS above PTQ with p < {ALPHA}",
                    fp32 - ptq
                ),
            }
        } else {
            Self {
                holds: dgms >= fp32 - NEAR_FP32_POINTS,
                rule: format!(
                    "PTQ within {PTQ_LOSS_POINTS} point of FP32: DGMS within \
                     {NEAR_FP32_POINTS} of FP32"
                ),
            }
        }
    }
}

pub fn print_table(s: &Summary) {
    println!(
        "DGMS on {} ({} test images{}), {}: FP32 top-1 {:.2}% [{:.2}, {:.2}]",
        s.data,
        s.test_images,
        if s.quick { ", --quick" } else { "" },
        s.model,
        s.fp32_top1,
        s.fp32_ci95[0],
        s.fp32_ci95[1],
    );
    println!(
        "{:>4} {:>3} {:>6} {:>23} {:>23} {:>10} {:>8} {:>7} {:>8}  claim",
        "bits",
        "K",
        "epochs",
        "PTQ top-1 [95% CI]",
        "DGMS top-1 [95% CI]",
        "McNemar p",
        "sparsity",
        "CR",
        "bytes"
    );
    for r in &s.rows {
        let cell = |top1: f64, ci: [f64; 2]| format!("{top1:.2} [{:.2}, {:.2}]", ci[0], ci[1]);
        println!(
            "{:>4} {:>3} {:>6} {:>23} {:>23} {:>10.2e} {:>7.2}% {:>6.2}x {:>8}  {}",
            r.bits,
            r.k,
            r.dgms_epochs,
            cell(r.ptq_top1, r.ptq_ci95),
            cell(r.dgms_top1, r.ci95),
            r.mcnemar_p,
            100.0 * r.sparsity,
            r.compression_ratio,
            r.packed_bytes,
            if r.claim.holds {
                "holds"
            } else {
                "DOES NOT HOLD"
            },
        );
    }
    for r in &s.rows {
        println!("  K = {}: {}", r.k, r.claim.rule);
    }
    for r in &s.rows {
        if let Some(l) = &r.lsq {
            println!(
                "  K = {}: LSQ baseline {:.2} [{:.2}, {:.2}] (sparsity {:.2}%, {:.0}s); DGMS {:+.2} points, McNemar p {:.2e} ({} images right only with DGMS, {} only with LSQ)",
                r.k,
                l.top1,
                l.ci95[0],
                l.ci95[1],
                100.0 * l.sparsity,
                l.seconds,
                r.dgms_top1 - l.top1,
                l.mcnemar_p_vs_dgms,
                l.dgms_only_right,
                l.lsq_only_right,
            );
        }
    }
    println!(
        "FP32 weights {} bytes; {:.1}s in all",
        s.fp32_weights_bytes, s.seconds
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_rules() {
        // PTQ far below FP32: DGMS must beat it significantly.
        assert!(Claim::judge(88.8, 14.5, 86.6, 1e-9).holds);
        assert!(!Claim::judge(88.8, 78.0, 79.0, 0.2).holds);
        assert!(!Claim::judge(88.8, 78.0, 77.0, 1e-6).holds);
        // PTQ within a point: DGMS within half a point of FP32.
        assert!(Claim::judge(88.8, 88.5, 88.4, 0.9).holds);
        assert!(!Claim::judge(88.8, 88.5, 88.2, 0.9).holds);
    }
}
