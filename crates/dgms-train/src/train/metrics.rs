//! Loss and accuracy bookkeeping.

use candle_core::Tensor;

use crate::error::Result;

/// Number of rows whose label is among the `k` largest logits (ties count
/// against the label: a logit equal to the label's ranks above it only if it
/// comes first, as a stable sort would place it). A row with any NaN or
/// infinite logit is wrong: NaN compares false with everything, so it would
/// otherwise rank first.
pub fn correct_top_k(logits: &Tensor, labels: &Tensor, k: usize) -> Result<usize> {
    let rows: Vec<Vec<f32>> = logits.to_vec2()?;
    let labels: Vec<u32> = labels.to_vec1()?;
    Ok(count_top_k(&rows, &labels, k))
}

/// Per row, whether the label is the top-1 (as [`correct_top_k`] with
/// k = 1 counts it).
pub fn top1_hits(logits: &Tensor, labels: &Tensor) -> Result<Vec<bool>> {
    let rows: Vec<Vec<f32>> = logits.to_vec2()?;
    let labels: Vec<u32> = labels.to_vec1()?;
    Ok(rows
        .iter()
        .zip(&labels)
        .map(|(row, &label)| count_top_k(std::slice::from_ref(row), &[label], 1) == 1)
        .collect())
}

/// [`correct_top_k`] on host rows.
fn count_top_k(rows: &[Vec<f32>], labels: &[u32], k: usize) -> usize {
    rows.iter()
        .zip(labels)
        .filter(|(row, &label)| {
            if !is_finite_row(row) {
                return false;
            }
            let l = row[label as usize];
            let above = row
                .iter()
                .enumerate()
                .filter(|&(j, &v)| v > l || (v == l && j < label as usize))
                .count();
            above < k
        })
        .count()
}

fn is_finite_row(row: &[f32]) -> bool {
    row.iter().all(|v| v.is_finite())
}

/// Running sums over an epoch or an evaluation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    pub loss_sum: f64,
    pub top1: usize,
    pub top5: usize,
    pub seen: usize,
    /// Rows with a NaN or infinite logit (counted wrong).
    pub non_finite_rows: usize,
}

impl Tally {
    /// Adds one batch: its mean loss and its logits and labels.
    pub fn add(&mut self, mean_loss: f64, logits: &Tensor, labels: &Tensor) -> Result<()> {
        // The logits and labels come to the host once, for all three counts.
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        let labels: Vec<u32> = labels.to_vec1()?;
        let n = labels.len();
        self.loss_sum += mean_loss * n as f64;
        self.top1 += count_top_k(&rows, &labels, 1);
        self.top5 += count_top_k(&rows, &labels, 5);
        self.non_finite_rows += rows.iter().filter(|row| !is_finite_row(row)).count();
        self.seen += n;
        Ok(())
    }

    /// Whether every logit and the loss were finite.
    pub fn is_finite(&self) -> bool {
        self.non_finite_rows == 0 && self.loss_sum.is_finite()
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
        assert_eq!(
            top1_hits(&logits, &labels).unwrap(),
            vec![true, false, false]
        );
        let mut t = Tally::default();
        t.add(2.0, &logits, &labels).unwrap();
        assert_eq!((t.seen, t.top1), (3, 1));
        assert!((t.loss() - 2.0).abs() < 1e-12);
        assert!((t.top1() - 100.0 / 3.0).abs() < 1e-9);
        assert!(t.is_finite());
    }

    /// A NaN in the label's logit once made every comparison false, so the
    /// label ranked first: such rows (and rows with any non-finite logit)
    /// are wrong for top-1 and top-5, and make the tally non-finite.
    #[test]
    fn non_finite_rows_are_wrong() {
        let nan = f32::NAN;
        let logits = Tensor::new(
            &[
                [nan, 0.0, 0.0, 0.0, 0.0, 0.0],
                [1.0, f32::INFINITY, 0.0, 0.0, 0.0, 0.0],
                [1.0, nan, 0.0, 0.0, 0.0, 0.0],
                [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let labels = Tensor::new(&[0u32, 1, 0, 0], &Device::Cpu).unwrap();
        assert_eq!(correct_top_k(&logits, &labels, 1).unwrap(), 1);
        assert_eq!(correct_top_k(&logits, &labels, 5).unwrap(), 1);
        let mut t = Tally::default();
        t.add(0.5, &logits, &labels).unwrap();
        assert_eq!((t.top1, t.top5, t.non_finite_rows), (1, 1, 3));
        assert!(!t.is_finite());
        let mut finite_logits_nan_loss = Tally::default();
        finite_logits_nan_loss
            .add(
                f64::NAN,
                &logits.narrow(0, 3, 1).unwrap(),
                &labels.narrow(0, 3, 1).unwrap(),
            )
            .unwrap();
        assert!(!finite_logits_nan_loss.is_finite());
    }
}
