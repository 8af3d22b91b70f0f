//! How many samples each run takes, and along which axis each output holds them.
//!
//! tract's speed per sample depends on the batch in ways that differ by model: matrix products
//! gain from batches, while the convolutions of small CNNs get slower per sample as the batch
//! grows (1,000 samples of an OCR direction classifier took 2.1 s at batch 1 and 7.2 s at 8).
//! Unless `--batch-size` is given, the reference is timed on one batch of each candidate size,
//! one batch per core at once as the check runs them (after a warm-up round, best of two), and
//! the fastest per sample is kept. Metrics do not depend on that
//! choice: samples are measured one by one and summed in sample order.

use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;

use crate::error::Result;
use crate::fold::Fixed;
use crate::runner::Runner;
use crate::samples::Samples;

/// The batch sizes timed when `--batch-size` is not given, smallest first.
pub const BATCH_CANDIDATES: [usize; 3] = [1, 8, 32];

/// A reference runner loaded for one batch size.
pub struct Loaded {
    /// The batch size.
    pub size: usize,
    /// The reference model, loaded for that size.
    pub runner: Runner,
}

/// Times `reference` on one batch of each candidate size (no larger than the samples) and
/// returns the runners loaded on the way, the fastest per sample first. Stops growing the
/// batch once a size is slower per sample than the one before.
pub fn fastest(
    (path, bytes): (&Path, &[u8]),
    samples: &Samples,
    fixed: &Fixed,
) -> Result<Vec<Loaded>> {
    let mut timed: Vec<(f64, Loaded)> = Vec::new();
    for size in BATCH_CANDIDATES {
        if size > samples.count && !timed.is_empty() {
            break;
        }
        let runner = match Runner::new(bytes, path, &samples.shapes(0, size), fixed) {
            Ok(runner) => runner,
            // A model that only loads for small batches is run at the sizes that load.
            Err(_) if !timed.is_empty() => break,
            Err(error) => return Err(error),
        };
        let inputs = samples.run_inputs(0, size.min(samples.count), size)?;
        // Timed as the check runs: one batch per core at once, so that sizes whose working set
        // crowds the shared caches are timed with that crowding. The first round warms up.
        let threads = rayon::current_num_threads().max(1);
        let mut seconds = f64::INFINITY;
        for round in 0..3 {
            let start = Instant::now();
            let ran = (0..threads)
                .into_par_iter()
                .all(|_| runner.run(path, &inputs).is_ok());
            // Errors are reported by the check's own runs, with their sample.
            if !ran {
                break;
            }
            if round > 0 {
                seconds = seconds.min(start.elapsed().as_secs_f64() / threads as f64);
            }
        }
        let per_sample = seconds / size as f64;
        let slower = timed.last().is_some_and(|(t, _)| per_sample > *t);
        timed.push((per_sample, Loaded { size, runner }));
        if slower {
            break;
        }
    }
    timed.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(timed.into_iter().map(|(_, loaded)| loaded).collect())
}

/// The batch axis of each output, from its shapes at two batch sizes: the axis that is `a`
/// long at batch `a` and `b` long at batch `b` (`[T, B, C]` outputs have it second). `None`
/// for outputs whose shape does not follow the batch.
pub fn output_axes(
    (a, at_a): (usize, &[Vec<usize>]),
    (b, at_b): (usize, &[Vec<usize>]),
) -> Vec<Option<usize>> {
    at_a.iter()
        .zip(at_b)
        .map(|(x, y)| {
            if x.len() != y.len() {
                return None;
            }
            let moving: Vec<usize> = (0..x.len()).filter(|&i| x[i] != y[i]).collect();
            match moving[..] {
                [axis] if x[axis] == a && y[axis] == b => Some(axis),
                _ => None,
            }
        })
        .collect()
}

/// The batch axis of each output when only one batch size `size` was loaded (the model fixes
/// it): the first axis that long, if the batch holds more than one sample.
pub fn guessed_axes(size: usize, shapes: &[Vec<usize>]) -> Vec<Option<usize>> {
    shapes
        .iter()
        .map(|s| {
            if size > 1 {
                s.iter().position(|&d| d == size)
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_axis_is_the_one_that_follows_the_batch() {
        let at_1 = vec![vec![6, 1, 10], vec![1, 10], vec![3]];
        let at_8 = vec![vec![6, 8, 10], vec![8, 10], vec![3]];
        assert_eq!(
            output_axes((1, &at_1), (8, &at_8)),
            vec![Some(1), Some(0), None]
        );
    }
}
