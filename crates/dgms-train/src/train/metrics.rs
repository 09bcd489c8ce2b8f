//! Loss and accuracy bookkeeping.

use candle_core::Tensor;

use crate::error::Result;

/// Number of rows whose label is among the `k` largest logits (ties count
/// against the label: a logit equal to the label's ranks above it only if it
/// comes first, as a stable sort would place it).
pub fn correct_top_k(logits: &Tensor, labels: &Tensor, k: usize) -> Result<usize> {
    let rows: Vec<Vec<f32>> = logits.to_vec2()?;
    let labels: Vec<u32> = labels.to_vec1()?;
    Ok(rows
        .iter()
        .zip(&labels)
        .filter(|(row, &label)| {
            let l = row[label as usize];
            let above = row
                .iter()
                .enumerate()
                .filter(|&(j, &v)| v > l || (v == l && j < label as usize))
                .count();
            above < k
        })
        .count())
}

/// Running sums over an epoch or an evaluation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    pub loss_sum: f64,
    pub top1: usize,
    pub top5: usize,
    pub seen: usize,
}

impl Tally {
    /// Adds one batch: its mean loss and its logits and labels.
    pub fn add(&mut self, mean_loss: f64, logits: &Tensor, labels: &Tensor) -> Result<()> {
        let n = labels.dim(0)?;
        self.loss_sum += mean_loss * n as f64;
        self.top1 += correct_top_k(logits, labels, 1)?;
        self.top5 += correct_top_k(logits, labels, 5)?;
        self.seen += n;
        Ok(())
    }

    pub fn loss(&self) -> f64 {
        self.loss_sum / self.seen.max(1) as f64
    }

    /// Top-1 accuracy in percent.
    pub fn top1(&self) -> f64 {
        100.0 * self.top1 as f64 / self.seen.max(1) as f64
    }

    /// Top-5 accuracy in percent.
    pub fn top5(&self) -> f64 {
        100.0 * self.top5 as f64 / self.seen.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn top_k_counts_rank_of_label() {
        let logits = Tensor::new(
            &[[0.1f32, 0.9, 0.0], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6]],
            &Device::Cpu,
        )
        .unwrap();
        let labels = Tensor::new(&[1u32, 2, 1], &Device::Cpu).unwrap();
        assert_eq!(correct_top_k(&logits, &labels, 1).unwrap(), 1);
        // Row 2: label 2 ranks second; row 3: label 1 ties with 0, ranks third.
        assert_eq!(correct_top_k(&logits, &labels, 2).unwrap(), 2);
        assert_eq!(correct_top_k(&logits, &labels, 3).unwrap(), 3);
        let mut t = Tally::default();
        t.add(2.0, &logits, &labels).unwrap();
        assert_eq!((t.seen, t.top1), (3, 1));
        assert!((t.loss() - 2.0).abs() < 1e-12);
        assert!((t.top1() - 100.0 / 3.0).abs() < 1e-9);
    }
}
