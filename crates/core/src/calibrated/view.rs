//! A weight seen as the matrix `W` of `Y = X W^T`: one row per output, one column per column of
//! the layer's input matrix `X`; and the tap that gives that `X`.

use crate::calibrated::stats::{ConvGeometry, Geometry, Padding, Tap};
use crate::model::weights::{Role, Weight};
use crate::model::{Model, Node};
use crate::proto::DataType;

/// A weight as `rows x cols` (per group), whatever its stored layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MatrixView {
    /// Outputs.
    pub rows: usize,
    /// Columns per group: the reduction length.
    pub cols: usize,
    /// Groups of rows with their own columns (a grouped Conv's groups).
    pub groups: usize,
    /// Stored as `[cols, rows]` (`MatMul` `[K, N]`, `Gemm` `B` with `transB=0`).
    pub transposed: bool,
    /// Kernel elements per input channel (Conv), 1 otherwise: N:M groups run along channels.
    pub inner: usize,
}

impl MatrixView {
    /// Flat index of element `(r, c)` in the stored tensor.
    pub fn index(&self, r: usize, c: usize) -> usize {
        if self.transposed {
            c * self.rows + r
        } else {
            r * self.cols + c
        }
    }

    /// The column group of row `r`.
    pub fn group(&self, r: usize) -> usize {
        r / (self.rows / self.groups)
    }

    /// Rows of group `g`.
    pub fn group_rows(&self, g: usize) -> std::ops::Range<usize> {
        let per = self.rows / self.groups;
        g * per..(g + 1) * per
    }

    /// Columns in the order N:M groups are consecutive in: for a Conv, channel-major within each
    /// kernel position (`(ky, kx, c)`), as N:M runs along the channel axis; otherwise as stored.
    pub fn nm_order(&self) -> Vec<usize> {
        let channels = self.cols / self.inner;
        (0..self.inner)
            .flat_map(|k| (0..channels).map(move |c| c * self.inner + k))
            .collect()
    }

    /// The length of the axis N:M groups run along (channels for a Conv).
    pub fn nm_axis_len(&self) -> usize {
        self.cols / self.inner
    }
}

/// The matrix view of `weight` and the tap giving its layer's input, or why there is none.
pub(crate) fn layer_of(model: &Model, weight: &Weight) -> Result<(MatrixView, Tap), String> {
    let consumer = weight.consumer.as_ref().ok_or("consumed by no node")?;
    if consumer.graph != 0 {
        return Err("inside a subgraph, whose activations a calibration run cannot tap".into());
    }
    let node = &model.graphs()[0].nodes[consumer.node];
    let dims: Vec<usize> = model.tensors()[weight.tensor]
        .dims
        .iter()
        .map(|&d| d as usize)
        .collect();
    let activation = node
        .inputs
        .first()
        .filter(|name| !name.is_empty())
        .cloned()
        .ok_or("its node has no input activation")?;
    if model
        .tensors()
        .iter()
        .any(|t| t.graph == 0 && t.name == activation)
    {
        return Err(format!(
            "its input `{activation}` is a constant, not an activation"
        ));
    }
    let int = |name: &str, default: i64| node.ints.get(name).copied().unwrap_or(default);
    let (view, geometry) = match weight.role {
        Role::ConvWeight if (3..=4).contains(&dims.len()) => {
            let group = int("group", 1).max(1) as usize;
            if dims[0] % group != 0 {
                return Err(format!("{} output channels in {group} groups", dims[0]));
            }
            let inner: usize = dims[2..].iter().product();
            let view = MatrixView {
                rows: dims[0],
                cols: dims[1] * inner,
                groups: group,
                transposed: false,
                inner,
            };
            (
                view,
                Geometry::Conv(conv_geometry(node, &dims[2..], group)?),
            )
        }
        Role::ConvWeight => {
            return Err(format!(
                "a {}-D Conv is not calibrated",
                dims.len().saturating_sub(2)
            ))
        }
        Role::GemmB if consumer.input == 1 && dims.len() == 2 => {
            let trans_b = int("transB", 0) != 0;
            let (rows, cols) = if trans_b {
                (dims[0], dims[1])
            } else {
                (dims[1], dims[0])
            };
            let view = MatrixView {
                rows,
                cols,
                groups: 1,
                transposed: !trans_b,
                inner: 1,
            };
            let geometry = Geometry::Rows {
                transposed: int("transA", 0) != 0,
            };
            (view, geometry)
        }
        Role::MatmulWeight if consumer.input == 1 && dims.len() == 2 => {
            let view = MatrixView {
                rows: dims[1],
                cols: dims[0],
                groups: 1,
                transposed: true,
                inner: 1,
            };
            (view, Geometry::Rows { transposed: false })
        }
        Role::MatmulWeight => {
            return Err("a MatMul weight is calibrated only as a 2-D right operand".into())
        }
        role => return Err(format!("{} weights are not calibrated", role.name())),
    };
    let tap = Tap {
        id: weight.id.clone(),
        activation,
        geometry,
        cols: view.cols,
    };
    Ok((view, tap))
}

fn conv_geometry(node: &Node, kernel: &[usize], group: usize) -> Result<ConvGeometry, String> {
    let list = |name: &str, default: usize, len: usize| -> Vec<usize> {
        node.int_lists
            .get(name)
            .map(|v| v.iter().map(|&x| x.max(0) as usize).collect())
            .unwrap_or_else(|| vec![default; len])
    };
    let rank = kernel.len();
    let (strides, dilations) = (list("strides", 1, rank), list("dilations", 1, rank));
    if kernel.contains(&0) {
        return Err("an empty kernel".into());
    }
    let padding = match node.strings.get("auto_pad").map(String::as_str) {
        None | Some("NOTSET") => {
            let pads = list("pads", 0, 2 * rank);
            if pads.len() != 2 * rank {
                return Err(format!("{} pads for a {rank}-D kernel", pads.len()));
            }
            Padding::Explicit(pads)
        }
        Some("VALID") => Padding::Explicit(vec![0; 2 * kernel.len()]),
        Some("SAME_UPPER") => Padding::SameUpper,
        Some("SAME_LOWER") => Padding::SameLower,
        Some(other) => return Err(format!("auto_pad `{other}` is not understood")),
    };
    if strides.len() != kernel.len() || dilations.len() != kernel.len() {
        return Err("strides or dilations do not match the kernel's rank".into());
    }
    if strides.contains(&0) || dilations.contains(&0) {
        return Err("a stride or dilation of 0".into());
    }
    Ok(ConvGeometry {
        kernel: kernel.to_vec(),
        strides,
        dilations,
        padding,
        group,
    })
}

/// A float tensor's little-endian elements as `f64`.
pub(crate) fn decode(dtype: DataType, bytes: &[u8]) -> Vec<f64> {
    match dtype {
        DataType::Float32 => bytes
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        DataType::Float64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        DataType::Float16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        DataType::BFloat16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        DataType::Other(_) => unreachable!("decoding a non-float tensor"),
    }
}

/// `values` as little-endian elements of `dtype`, rounded to nearest. Where `keep_nonzero`
/// says so, a value that rounds to zero becomes the smallest subnormal of its sign, so that a
/// kept weight never turns into a zero that was not promised.
pub(crate) fn encode(dtype: DataType, values: &[f64], keep_nonzero: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * dtype.size().expect("float type"));
    for (&v, &keep) in values.iter().zip(keep_nonzero) {
        match dtype {
            DataType::Float32 => {
                let mut x = v as f32;
                if keep && x == 0.0 {
                    x = f32::from_bits(1).copysign(v as f32);
                }
                out.extend_from_slice(&x.to_le_bytes());
            }
            DataType::Float64 => {
                let x = if keep && v == 0.0 {
                    f64::from_bits(1).copysign(v)
                } else {
                    v
                };
                out.extend_from_slice(&x.to_le_bytes());
            }
            DataType::Float16 => {
                let mut x = half::f16::from_f64(v);
                if keep && x.to_f64() == 0.0 {
                    x = half::f16::from_bits(1 | (x.to_bits() & 0x8000));
                }
                out.extend_from_slice(&x.to_le_bytes());
            }
            DataType::BFloat16 => {
                let mut x = half::bf16::from_f64(v);
                if keep && x.to_f64() == 0.0 {
                    x = half::bf16::from_bits(1 | (x.to_bits() & 0x8000));
                }
                out.extend_from_slice(&x.to_le_bytes());
            }
            DataType::Other(_) => unreachable!("encoding a non-float tensor"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_values_never_round_to_zero() {
        for dtype in [
            DataType::Float32,
            DataType::Float64,
            DataType::Float16,
            DataType::BFloat16,
        ] {
            let values = [1e-300, -1e-300, 0.0, 0.5];
            let bytes = encode(dtype, &values, &[true, true, false, true]);
            let back = decode(dtype, &bytes);
            assert!(back[0] > 0.0 && back[1] < 0.0, "{dtype:?}: {back:?}");
            assert_eq!(back[2], 0.0);
            assert_eq!(back[3], 0.5);
        }
    }

    #[test]
    fn conv_columns_in_nm_order_run_along_channels() {
        let view = MatrixView {
            rows: 2,
            cols: 8,
            groups: 1,
            transposed: false,
            inner: 2,
        };
        assert_eq!(view.nm_order(), vec![0, 2, 4, 6, 1, 3, 5, 7]);
    }
}
