//! Learning-rate (and momentum) schedules, stepped once per iteration.
//!
//! `OneCycle` follows PyTorch's `OneCycleLR` with its defaults
//! (`anneal_strategy="cos"`, `three_phase=False`, `cycle_momentum=True`):
//! phase 1 runs from step 0 to `pct_start * total - 1`, annealing the lr from
//! `max_lr / div_factor` up to `max_lr` and the momentum from
//! `max_momentum` down to `base_momentum`; phase 2 runs to `total - 1`,
//! annealing the lr to `max_lr / (div_factor * final_div_factor)` and the
//! momentum back up. Each anneal is `end + (start - end) / 2 * (1 + cos(pi *
//! pct))` with `pct` the fraction of the phase done.

use serde::{Deserialize, Serialize};

/// A schedule: the lr (and optionally momentum) at each optimizer step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Schedule {
    /// PyTorch `OneCycleLR` semantics.
    OneCycle {
        max_lr: f64,
        total_steps: usize,
        pct_start: f64,
        div_factor: f64,
        final_div_factor: f64,
        base_momentum: f64,
        max_momentum: f64,
    },
    /// PyTorch `CosineAnnealingLR` over `total_steps` (no restarts).
    Cosine {
        base_lr: f64,
        total_steps: usize,
        min_lr: f64,
    },
    /// PyTorch `MultiStepLR`: the lr is multiplied by `gamma` at each
    /// milestone (in steps).
    MultiStep {
        base_lr: f64,
        milestones: Vec<usize>,
        gamma: f64,
    },
    /// A constant lr.
    Constant { lr: f64 },
}

fn cos_anneal(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * (1.0 + (std::f64::consts::PI * pct).cos())
}

impl Schedule {
    /// `OneCycle` with PyTorch's defaults (pct_start 0.3, div_factor 25,
    /// final_div_factor 1e4, momentum cycled between 0.85 and 0.95).
    pub fn one_cycle(max_lr: f64, total_steps: usize) -> Self {
        Schedule::OneCycle {
            max_lr,
            total_steps,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            base_momentum: 0.85,
            max_momentum: 0.95,
        }
    }

    /// The learning rate at optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        match self {
            Schedule::OneCycle {
                max_lr,
                div_factor,
                final_div_factor,
                ..
            } => {
                let initial = max_lr / div_factor;
                let min = initial / final_div_factor;
                self.one_cycle_anneal(step, (initial, *max_lr, min))
            }
            Schedule::Cosine {
                base_lr,
                total_steps,
                min_lr,
            } => {
                let t = step.min(*total_steps) as f64 / (*total_steps).max(1) as f64;
                cos_anneal(*base_lr, *min_lr, t)
            }
            Schedule::MultiStep {
                base_lr,
                milestones,
                gamma,
            } => {
                let passed = milestones.iter().filter(|&&m| step >= m).count();
                base_lr * gamma.powi(passed as i32)
            }
            Schedule::Constant { lr } => *lr,
        }
    }

    /// The momentum at step `step` when the schedule cycles it (one-cycle),
    /// else `None` (the optimizer keeps its own).
    pub fn momentum(&self, step: usize) -> Option<f64> {
        match self {
            Schedule::OneCycle {
                base_momentum,
                max_momentum,
                ..
            } => Some(self.one_cycle_anneal(step, (*max_momentum, *base_momentum, *max_momentum))),
            _ => None,
        }
    }

    /// Anneals through the two one-cycle phases: `values` = (value at step
    /// 0, value at the end of phase 1, value at the last step).
    fn one_cycle_anneal(&self, step: usize, values: (f64, f64, f64)) -> f64 {
        let Schedule::OneCycle {
            total_steps,
            pct_start,
            ..
        } = self
        else {
            return values.0;
        };
        let phase1_end = pct_start * *total_steps as f64 - 1.0;
        let phase2_end = *total_steps as f64 - 1.0;
        let step = step as f64;
        if step <= phase1_end {
            cos_anneal(values.0, values.1, step / phase1_end)
        } else {
            let pct = (step - phase1_end) / (phase2_end - phase1_end);
            cos_anneal(values.1, values.2, pct)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-12)
    }

    /// Values worked out by hand from PyTorch's documented formula for
    /// OneCycleLR(max_lr=0.1, total_steps=100): phase 1 ends at step 29,
    /// phase 2 at step 99.
    #[test]
    fn one_cycle_follows_pytorch_formula() {
        let s = Schedule::one_cycle(0.1, 100);
        // step 0: initial lr = 0.1 / 25, max momentum.
        assert!(close(s.lr(0), 0.004));
        assert!(close(s.momentum(0).unwrap(), 0.95));
        // end of phase 1 (step 29): max lr, base momentum.
        assert!(close(s.lr(29), 0.1));
        assert!(close(s.momentum(29).unwrap(), 0.85));
        // half-way through phase 1 (pct = 14.5 / 29 = 0.5 at step 14.5):
        // step 14 has pct = 14/29.
        let pct: f64 = 14.0 / 29.0;
        let expected = 0.1 + (0.004 - 0.1) / 2.0 * (1.0 + (std::f64::consts::PI * pct).cos());
        assert!(close(s.lr(14), expected));
        // last step: min lr = 0.004 / 1e4, max momentum again.
        assert!(close(s.lr(99), 4e-7));
        assert!(close(s.momentum(99).unwrap(), 0.95));
        // step 64 is half-way through phase 2 (pct = 35 / 70): the lr is the
        // mean of max and min, the momentum the mean of base and max.
        assert!(close(s.lr(64), (0.1 + 4e-7) / 2.0));
        assert!(close(s.momentum(64).unwrap(), 0.9));
    }

    #[test]
    fn one_cycle_is_monotone_in_each_phase() {
        let s = Schedule::one_cycle(2e-5, 1000);
        for t in 1..300 {
            assert!(s.lr(t) > s.lr(t - 1), "warm-up rises at {t}");
            assert!(s.momentum(t).unwrap() < s.momentum(t - 1).unwrap());
        }
        for t in 300..1000 {
            assert!(s.lr(t) < s.lr(t - 1), "anneal falls at {t}");
        }
    }

    #[test]
    fn cosine_and_multistep_follow_their_formulas() {
        let c = Schedule::Cosine {
            base_lr: 0.1,
            total_steps: 10,
            min_lr: 0.0,
        };
        assert!(close(c.lr(0), 0.1));
        assert!(close(c.lr(5), 0.05));
        assert!(c.lr(10).abs() < 1e-15);
        assert_eq!(c.momentum(3), None);
        let m = Schedule::MultiStep {
            base_lr: 0.1,
            milestones: vec![3, 6],
            gamma: 0.1,
        };
        assert!(close(m.lr(2), 0.1));
        assert!(close(m.lr(3), 0.01));
        assert!(close(m.lr(7), 0.001));
    }
}
