//! Moving tensors between dense storage and COO sparse storage (`sparse_initializer`, a
//! `Constant`'s `sparse_value`), by swapping the whole field in its parent message.
//!
//! New messages are encoded with `onnx-protobuf`; everything around them keeps its bytes.

use std::ops::Range;

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{AttributeProto, Message, SparseTensorProto, TensorProto};
use onnx_splice::{encode_len_header, LenField, Patch, Splice};
use prost::encoding::encoded_len_varint;

use crate::error::{Error, Result};
use crate::model::values::stored_bytes;
use crate::model::{Model, Source, Tensor};
use crate::proto::{graph, node, DataType};

/// `TensorProto.DataType.INT64`.
const INT64: i32 = 7;

/// The span of the field that holds `tensor` in a graph or node (for a `Constant`, its whole
/// attribute), and the length-delimited fields enclosing it.
fn holder(tensor: &Tensor) -> (Range<usize>, Vec<LenField>) {
    let chain = &tensor.enclosing;
    match tensor.source {
        Source::Initializer | Source::SparseInitializer => {
            (tensor.field.clone(), chain[..chain.len() - 1].to_vec())
        }
        Source::Constant(_) | Source::SparseConstant(_) => {
            let attr = chain[chain.len() - 2];
            let key_len = encoded_len_varint(u64::from(node::ATTRIBUTE << 3 | 2));
            (
                attr.prefix_start - key_len..attr.payload_end,
                chain[..chain.len() - 2].to_vec(),
            )
        }
    }
}

fn field(number: u32, message: &impl Message) -> Vec<u8> {
    let payload = message.write_to_bytes().expect("encoding to memory");
    let mut out = Vec::with_capacity(payload.len() + 10);
    encode_len_header(number, payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// The field holding `tensor`, with `dense` data (little-endian elements), in COO sparse storage
/// with linearised int64 indices; `None` when that is not smaller than the dense data, unless
/// `always` (a tensor stored sparse already stays sparse).
pub fn sparse_field(tensor: &Tensor, dense: &[u8], always: bool) -> Option<Vec<u8>> {
    let size = tensor.dtype.size()?;
    let mut values = Vec::new();
    let mut indices = Vec::new();
    for (i, element) in dense.chunks_exact(size).enumerate() {
        let last = element.len() - 1;
        let zero = element[..last].iter().all(|&b| b == 0) && element[last] & 0x7f == 0;
        if !zero {
            values.extend_from_slice(element);
            indices.extend_from_slice(&(i as i64).to_le_bytes());
        }
    }
    if values.len() + indices.len() >= dense.len() && !always {
        return None;
    }
    let nnz = (values.len() / size) as i64;
    let mut sparse = SparseTensorProto::new();
    let mut v = TensorProto::new();
    v.name = tensor.name.clone();
    v.data_type = tensor.dtype.code();
    v.dims = vec![nnz];
    v.raw_data = values;
    let mut ix = TensorProto::new();
    ix.name = format!("{}_indices", tensor.name);
    ix.data_type = INT64;
    ix.dims = vec![nnz];
    ix.raw_data = indices;
    sparse.values = Some(v).into();
    sparse.indices = Some(ix).into();
    sparse.dims = tensor.dims.clone();
    Some(match tensor.source {
        Source::Initializer | Source::SparseInitializer => {
            field(graph::SPARSE_INITIALIZER, &sparse)
        }
        Source::Constant(_) | Source::SparseConstant(_) => {
            let mut attr = AttributeProto::new();
            attr.name = "sparse_value".into();
            attr.type_ = AttributeType::SPARSE_TENSOR.into();
            attr.sparse_tensor = Some(sparse).into();
            field(node::ATTRIBUTE, &attr)
        }
    })
}

/// Replaces the field holding `tensor` with `bytes` in `splice`.
pub fn swap_field<'a>(splice: &mut Splice<'a>, tensor: &Tensor, bytes: Vec<u8>) {
    let (span, enclosing) = holder(tensor);
    splice.replace(span, Patch::Bytes(bytes), enclosing);
}

/// The dense elements of a sparse tensor, as little-endian bytes.
pub(crate) fn dense_of(model: &Model, tensor: &Tensor) -> Result<Vec<u8>> {
    let layout = tensor.sparse.as_ref().expect("a sparse tensor");
    let size = tensor
        .dtype
        .size()
        .ok_or_else(|| Error::tensor(&tensor.name, "element type has no fixed size"))?;
    let values = stored_bytes(
        model,
        &tensor.payload,
        tensor.dtype,
        layout.nnz,
        &tensor.name,
    )?;
    let index_count = layout.indices_dims.iter().product::<i64>().max(0) as u64;
    let index_type = if layout.indices_type == DataType::Other(INT64) {
        DataType::Other(INT64)
    } else {
        return Err(Error::tensor(&tensor.name, "sparse indices are not int64"));
    };
    let indices = stored_bytes(
        model,
        &layout.indices,
        index_type,
        index_count,
        &tensor.name,
    )?;
    let indices: Vec<i64> = indices
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let n = tensor.elements as usize;
    let rank = tensor.dims.len();
    let linear: Vec<i64> = if layout.indices_dims.len() == 2 {
        // [nnz, rank] coordinates.
        indices
            .chunks_exact(rank.max(1))
            .map(|c| {
                c.iter()
                    .zip(&tensor.dims)
                    .fold(0i64, |acc, (&i, &d)| acc * d + i)
            })
            .collect()
    } else {
        indices
    };
    let mut dense = vec![0u8; n * size];
    for (k, &index) in linear.iter().enumerate() {
        let i = usize::try_from(index)
            .ok()
            .filter(|&i| i < n)
            .ok_or_else(|| {
                Error::tensor(
                    &tensor.name,
                    format!("sparse index {index} is outside the shape"),
                )
            })?;
        dense[i * size..(i + 1) * size].copy_from_slice(&values[k * size..(k + 1) * size]);
    }
    Ok(dense)
}

/// The model's bytes with every sparse tensor stored densely, or `None` when it has none.
/// (tract reads dense initializers only.)
pub fn densified(model: &Model) -> Result<Option<Vec<u8>>> {
    let mut splice = Splice::default();
    for tensor in model.tensors().iter().filter(|t| t.sparse.is_some()) {
        let mut dense = TensorProto::new();
        dense.name = tensor.name.clone();
        dense.data_type = tensor.dtype.code();
        dense.dims = tensor.dims.clone();
        dense.raw_data = dense_of(model, tensor)?;
        let bytes = match tensor.source {
            Source::Constant(_) | Source::SparseConstant(_) => {
                let mut attr = AttributeProto::new();
                attr.name = "value".into();
                attr.type_ = AttributeType::TENSOR.into();
                attr.t = Some(dense).into();
                field(node::ATTRIBUTE, &attr)
            }
            _ => field(graph::INITIALIZER, &dense),
        };
        swap_field(&mut splice, tensor, bytes);
    }
    if splice.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    splice
        .write_to(model.bytes(), &mut out)
        .map_err(|e| Error::invalid(model.path(), e.to_string()))?;
    Ok(Some(out))
}
