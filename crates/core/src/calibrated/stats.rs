//! What a calibration run accumulates for one layer: the rows of its input matrix `X` (one row
//! per token, sample or convolution output position; one column per weight column) reduced to
//! per-column squared norms (Wanda), per-column sums (bias correction) and `X^T X` (SparseGPT,
//! output error). Sums over rows, so batches add up in any grouping; they are added in batch
//! order so that the result does not depend on the thread count.

/// Rows of `X` built and multiplied at once: bounds the memory of one batch's im2col.
const CHUNK_ROWS: usize = 1024;
/// Columns of `X^T X` computed at once: smaller blocks skip more of the lower triangle,
/// larger ones multiply faster.
const GRAM_BLOCK: usize = 64;

/// Padding of a convolution, as its `auto_pad` and `pads` attributes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Padding {
    /// `pads`: begins then ends, one per spatial axis (`[top, left, bottom, right]` in 2-D).
    Explicit(Vec<usize>),
    /// `SAME_UPPER`: output size `ceil(in / stride)`, the extra padding at the end.
    SameUpper,
    /// `SAME_LOWER`: as `SAME_UPPER`, the extra padding at the beginning.
    SameLower,
}

/// How a convolution turns its input into rows of `X`: im2col with columns `(c, ky, kx)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Kernel size per spatial axis (1 or 2 axes).
    pub kernel: Vec<usize>,
    /// Strides per spatial axis.
    pub strides: Vec<usize>,
    /// Dilations per spatial axis.
    pub dilations: Vec<usize>,
    /// Padding.
    pub padding: Padding,
    /// `group`: input and output channels split into this many independent groups.
    pub group: usize,
}

/// How a layer's input activation becomes rows of `X`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Geometry {
    /// `MatMul`/`Gemm`: an activation `[..., K]`, its leading axes flattened into rows; or, when
    /// `transposed` (`Gemm` with `transA=1`), a `[K, M]` activation whose columns are the rows.
    Rows {
        /// The activation is `[K, M]`.
        transposed: bool,
    },
    /// `Conv` on `[N, C, H, W]` (or `[N, C, L]`): one row per sample and output position, per
    /// group; padded positions count as zeros.
    Conv(ConvGeometry),
}

/// One layer whose input a calibration run taps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tap {
    /// The weight's id.
    pub id: String,
    /// The tensor (an ONNX value name) holding the layer's input activation.
    pub activation: String,
    /// How the activation becomes rows of `X`.
    pub geometry: Geometry,
    /// Columns of `X` per group (the weight's reduction length: `C/group * kh * kw` for a Conv).
    pub cols: usize,
}

impl Tap {
    /// Independent column groups (a grouped Conv's groups; 1 otherwise).
    pub fn groups(&self) -> usize {
        match &self.geometry {
            Geometry::Conv(conv) => conv.group,
            Geometry::Rows { .. } => 1,
        }
    }
}

/// Statistics of one layer's input over the calibration data, per column group.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerStats {
    /// Column groups.
    pub groups: usize,
    /// Columns per group.
    pub cols: usize,
    /// Rows of `X` seen (per group).
    pub rows: u64,
    /// `sum x_j^2` per column, `groups * cols`.
    pub sq_norms: Vec<f64>,
    /// `sum x_j` per column, `groups * cols`.
    pub sums: Vec<f64>,
    /// `X^T X` per group, row-major, `groups * cols * cols`.
    pub gram: Vec<f64>,
}

impl LayerStats {
    /// Empty statistics for `tap`.
    pub fn new(tap: &Tap) -> LayerStats {
        let (groups, cols) = (tap.groups(), tap.cols);
        LayerStats {
            groups,
            cols,
            rows: 0,
            sq_norms: vec![0.0; groups * cols],
            sums: vec![0.0; groups * cols],
            gram: vec![0.0; groups * cols * cols],
        }
    }

    /// Column means of group `g`.
    pub fn means(&self, g: usize) -> Vec<f64> {
        let n = self.rows.max(1) as f64;
        self.sums[g * self.cols..(g + 1) * self.cols]
            .iter()
            .map(|s| s / n)
            .collect()
    }

    /// `X^T X` of group `g`, row-major.
    pub fn gram(&self, g: usize) -> &[f64] {
        let size = self.cols * self.cols;
        &self.gram[g * size..(g + 1) * size]
    }

    /// Adds the rows that one activation tensor (`shape`, row-major `data`) gives `tap`.
    /// Errors say what does not fit (the caller names the layer).
    pub fn add(&mut self, tap: &Tap, shape: &[usize], data: &[f32]) -> Result<(), String> {
        if let Some(at) = data.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "activation `{}` holds a NaN or infinite value (element {at} of shape {shape:?})",
                tap.activation
            ));
        }
        match &tap.geometry {
            Geometry::Rows { transposed } => self.add_rows(tap, shape, data, *transposed),
            Geometry::Conv(conv) => self.add_conv(tap, conv, shape, data),
        }
    }

    fn add_rows(
        &mut self,
        tap: &Tap,
        shape: &[usize],
        data: &[f32],
        transposed: bool,
    ) -> Result<(), String> {
        let k = if transposed {
            shape.first().copied()
        } else {
            shape.last().copied()
        };
        if (transposed && shape.len() != 2) || k != Some(tap.cols) {
            return Err(format!(
                "activation `{}` has shape {shape:?}: expected {} columns{}",
                tap.activation,
                tap.cols,
                if transposed {
                    " on its first axis (transA=1)"
                } else {
                    " on its last axis"
                }
            ));
        }
        let cols = tap.cols;
        let rows = data.len() / cols.max(1);
        let mut buffer = Vec::with_capacity(CHUNK_ROWS.min(rows) * cols);
        for start in (0..rows).step_by(CHUNK_ROWS) {
            let end = (start + CHUNK_ROWS).min(rows);
            buffer.clear();
            for r in start..end {
                if transposed {
                    buffer.extend((0..cols).map(|c| f64::from(data[c * rows + r])));
                } else {
                    buffer.extend(data[r * cols..(r + 1) * cols].iter().map(|&v| f64::from(v)));
                }
            }
            self.add_chunk(0, &buffer);
        }
        Ok(())
    }

    fn add_conv(
        &mut self,
        tap: &Tap,
        conv: &ConvGeometry,
        shape: &[usize],
        data: &[f32],
    ) -> Result<(), String> {
        let spatial = conv.kernel.len();
        if shape.len() != spatial + 2 || !(1..=2).contains(&spatial) {
            return Err(format!(
                "activation `{}` has shape {shape:?}: expected [N, C, {}] for a {spatial}-D Conv",
                tap.activation,
                vec!["D"; spatial].join(", ")
            ));
        }
        let (batch, channels) = (shape[0], shape[1]);
        let group_channels = channels / conv.group.max(1);
        let kernel_size: usize = conv.kernel.iter().product();
        if channels % conv.group.max(1) != 0 || group_channels * kernel_size != tap.cols {
            return Err(format!(
                "activation `{}` has {channels} channels: the weight expects {} per group of {}",
                tap.activation,
                tap.cols / kernel_size.max(1),
                conv.group
            ));
        }
        // Spatial axes as 2-D: a 1-D Conv is a 2-D one of height 1.
        let two = |v: &[usize], fill: usize| -> [usize; 2] {
            if v.len() == 1 {
                [fill, v[0]]
            } else {
                [v[0], v[1]]
            }
        };
        let input = two(&shape[2..], 1);
        let (kernel, strides, dilations) = (
            two(&conv.kernel, 1),
            two(&conv.strides, 1),
            two(&conv.dilations, 1),
        );
        let mut begin = [0usize; 2];
        let mut output = [0usize; 2];
        for a in 0..2 {
            let reach = dilations[a] * (kernel[a] - 1) + 1;
            let (pad_begin, pad_total) = match &conv.padding {
                Padding::Explicit(pads) => {
                    let (b, e) = if pads.len() == 2 * spatial {
                        let pads2 = two(&pads[..spatial], 0);
                        let ends2 = two(&pads[spatial..], 0);
                        (pads2[a], ends2[a])
                    } else {
                        (0, 0)
                    };
                    (b, b + e)
                }
                same => {
                    let out = input[a].div_ceil(strides[a]);
                    let total = ((out - 1) * strides[a] + reach).saturating_sub(input[a]);
                    let b = if *same == Padding::SameUpper {
                        total / 2
                    } else {
                        total - total / 2
                    };
                    (b, total)
                }
            };
            if input[a] + pad_total < reach {
                return Err(format!(
                    "activation `{}` of shape {shape:?} is smaller than the kernel",
                    tap.activation
                ));
            }
            begin[a] = pad_begin;
            output[a] = (input[a] + pad_total - reach) / strides[a] + 1;
        }
        let positions = output[0] * output[1];
        let plane = input[0] * input[1];
        let mut buffer = Vec::with_capacity(CHUNK_ROWS.min(batch * positions) * tap.cols);
        for g in 0..conv.group {
            buffer.clear();
            for n in 0..batch {
                for p in 0..positions {
                    let (oy, ox) = (p / output[1], p % output[1]);
                    for ci in 0..group_channels {
                        let base = (n * channels + g * group_channels + ci) * plane;
                        for ky in 0..kernel[0] {
                            let y = (oy * strides[0] + ky * dilations[0]).checked_sub(begin[0]);
                            for kx in 0..kernel[1] {
                                let x = (ox * strides[1] + kx * dilations[1]).checked_sub(begin[1]);
                                let value = match (y, x) {
                                    (Some(y), Some(x)) if y < input[0] && x < input[1] => {
                                        f64::from(data[base + y * input[1] + x])
                                    }
                                    _ => 0.0,
                                };
                                buffer.push(value);
                            }
                        }
                    }
                    if buffer.len() == CHUNK_ROWS * tap.cols {
                        self.add_chunk(g, &buffer);
                        buffer.clear();
                    }
                }
            }
            if !buffer.is_empty() {
                self.add_chunk(g, &buffer);
            }
        }
        // Each group saw the same rows; count them once.
        self.rows -= (conv.group as u64 - 1) * (batch * positions) as u64;
        Ok(())
    }

    /// Adds row-major rows (`cols` each) to group `g`.
    fn add_chunk(&mut self, g: usize, rows: &[f64]) {
        let cols = self.cols;
        let n = rows.len() / cols;
        self.rows += n as u64;
        let (norms, sums) = (
            &mut self.sq_norms[g * cols..(g + 1) * cols],
            &mut self.sums[g * cols..(g + 1) * cols],
        );
        for row in rows.chunks_exact(cols) {
            for ((norm, sum), &x) in norms.iter_mut().zip(sums.iter_mut()).zip(row) {
                *norm += x * x;
                *sum += x;
            }
        }
        let gram = &mut self.gram[g * cols * cols..(g + 1) * cols * cols];
        // gram += X^T X, X being `n x cols` row-major. X^T X is symmetric: only the blocks on
        // and above the diagonal are multiplied (column block [j0, j1) gets rows 0..j1), about
        // half the work, then the upper triangle is mirrored.
        for j0 in (0..cols).step_by(GRAM_BLOCK) {
            let j1 = (j0 + GRAM_BLOCK).min(cols);
            // X[:, ..j1]^T has row stride 1 and column stride `cols`; X[:, j0..j1] row stride
            // `cols`. matrixmultiply runs on this thread only, so sums do not depend on threads.
            // SAFETY: `rows` holds `n * cols` elements and `gram` `cols * cols`; the pointers
            // start at column `j0` and address rows `..j1`, columns `j0..j1` only.
            unsafe {
                matrixmultiply::dgemm(
                    j1,
                    n,
                    j1 - j0,
                    1.0,
                    rows.as_ptr(),
                    1,
                    cols as isize,
                    rows.as_ptr().add(j0),
                    cols as isize,
                    1,
                    1.0,
                    gram.as_mut_ptr().add(j0),
                    cols as isize,
                    1,
                );
            }
        }
        // Tile by tile, so that the column-wise reads stay in cache.
        for i0 in (0..cols).step_by(GRAM_BLOCK) {
            for j0 in (0..=i0).step_by(GRAM_BLOCK) {
                for i in i0..(i0 + GRAM_BLOCK).min(cols) {
                    for j in j0..(j0 + GRAM_BLOCK).min(i) {
                        gram[i * cols + j] = gram[j * cols + i];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv_tap(padding: Padding, strides: Vec<usize>, group: usize, cols: usize) -> Tap {
        Tap {
            id: "w".into(),
            activation: "x".into(),
            geometry: Geometry::Conv(ConvGeometry {
                kernel: vec![2, 2],
                strides,
                dilations: vec![1, 1],
                padding,
                group,
            }),
            cols,
        }
    }

    #[test]
    fn gram_is_x_transpose_x() {
        let tap = Tap {
            id: "w".into(),
            activation: "x".into(),
            geometry: Geometry::Rows { transposed: false },
            cols: 2,
        };
        let mut stats = LayerStats::new(&tap);
        // Rows (1, 2), (3, 4), (5, 6) in a [1, 3, 2] activation: leading axes flattened.
        stats
            .add(&tap, &[1, 3, 2], &[1., 2., 3., 4., 5., 6.])
            .unwrap();
        assert_eq!(stats.rows, 3);
        assert_eq!(stats.gram, vec![35., 44., 44., 56.]);
        assert_eq!(stats.sq_norms, vec![35., 56.]);
        assert_eq!(stats.sums, vec![9., 12.]);
        // Gemm transA=1: the same rows given as a [K, M] activation.
        let tap = Tap {
            geometry: Geometry::Rows { transposed: true },
            ..tap
        };
        let mut transposed = LayerStats::new(&tap);
        transposed
            .add(&tap, &[2, 3], &[1., 3., 5., 2., 4., 6.])
            .unwrap();
        assert_eq!(transposed, stats);
    }

    #[test]
    fn gram_blocks_give_the_whole_symmetric_product() {
        // 150 columns: three column blocks, the last one partial.
        let cols = 150;
        let tap = Tap {
            id: "w".into(),
            activation: "x".into(),
            geometry: Geometry::Rows { transposed: false },
            cols,
        };
        let data: Vec<f32> = (0..7 * cols)
            .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
            .collect();
        let mut stats = LayerStats::new(&tap);
        stats.add(&tap, &[7, cols], &data).unwrap();
        stats.add(&tap, &[7, cols], &data).unwrap();
        for a in 0..cols {
            for b in 0..cols {
                let exact: f64 = (0..7)
                    .map(|r| f64::from(data[r * cols + a]) * f64::from(data[r * cols + b]))
                    .sum::<f64>()
                    * 2.0;
                let got = stats.gram[a * cols + b];
                assert!((got - exact).abs() < 1e-12, "({a}, {b}): {got} vs {exact}");
            }
        }
    }

    #[test]
    fn padded_positions_count_as_zeros() {
        // A 2x2 input, 2x2 kernel, pads 1 all round, stride 2: output 2x2, each output
        // position sees exactly one input pixel.
        let tap = conv_tap(Padding::Explicit(vec![1, 1, 1, 1]), vec![2, 2], 1, 4);
        let mut stats = LayerStats::new(&tap);
        stats.add(&tap, &[1, 1, 2, 2], &[1., 2., 3., 4.]).unwrap();
        assert_eq!(stats.rows, 4);
        // Column (ky, kx) = (1, 1) sees pixel (0, 0) at output (0, 0), etc.
        assert_eq!(stats.sums, vec![4., 3., 2., 1.]);
        assert_eq!(stats.sq_norms, vec![16., 9., 4., 1.]);
    }

    #[test]
    fn groups_take_their_own_channels() {
        let tap = conv_tap(Padding::Explicit(vec![0, 0, 0, 0]), vec![1, 1], 2, 4);
        let mut stats = LayerStats::new(&tap);
        let data: Vec<f32> = (0..8).map(|v| v as f32).collect();
        stats.add(&tap, &[1, 2, 2, 2], &data).unwrap();
        assert_eq!(stats.rows, 1);
        assert_eq!(stats.sums, vec![0., 1., 2., 3., 4., 5., 6., 7.]);
    }

    #[test]
    fn non_finite_activations_are_refused() {
        let tap = conv_tap(Padding::SameUpper, vec![1, 1], 1, 4);
        let mut stats = LayerStats::new(&tap);
        let err = stats
            .add(&tap, &[1, 1, 2, 2], &[1., f32::NAN, 3., 4.])
            .unwrap_err();
        assert!(err.contains("NaN"), "{err}");
    }
}
