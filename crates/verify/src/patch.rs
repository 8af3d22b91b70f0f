//! Rewrites of the graph handed to tract around what tract 0.23 gets wrong, each exact.
//!
//! - A float16 `Gemm` with a bias `C`: tract's expansion of it multiplies `C` by `beta` as a
//!   float32 constant and refuses its own result ("expected F16 got F32"), so every float16
//!   model with a `Linear` layer failed. With `beta = 1` the bias is moved to an `Add` after a
//!   `Gemm` without it, which is the same computation.

use tract_onnx::pb;

const FLOAT16: i32 = pb::tensor_proto::DataType::Float16 as i32;

/// Whether the graph holds float16 data (an input or an initializer).
fn has_float16(graph: &pb::GraphProto) -> bool {
    graph.initializer.iter().any(|t| t.data_type == FLOAT16)
        || graph.input.iter().any(|i| {
            matches!(
                i.r#type.as_ref().and_then(|t| t.value.as_ref()),
                Some(pb::type_proto::Value::TensorType(t)) if t.elem_type == FLOAT16
            )
        })
}

/// Moves the bias of each `Gemm` with `beta = 1` of a float16 graph to an `Add`.
pub fn float16_gemm_bias(model: &mut pb::ModelProto) {
    let Some(graph) = model.graph.as_mut() else {
        return;
    };
    if !has_float16(graph) {
        return;
    }
    let mut index = 0;
    while index < graph.node.len() {
        let node = &graph.node[index];
        let beta = node
            .attribute
            .iter()
            .find(|a| a.name == "beta")
            .map_or(1.0, |a| a.f);
        let with_bias = node.input.len() == 3 && !node.input[2].is_empty();
        if node.op_type != "Gemm" || !with_bias || beta != 1.0 || node.output.len() != 1 {
            index += 1;
            continue;
        }
        let mut gemm = node.clone();
        let bias = gemm.input.pop().expect("three inputs");
        let output = gemm.output[0].clone();
        let product = format!("{output}/without_bias");
        gemm.output[0] = product.clone();
        gemm.attribute.retain(|a| a.name != "beta");
        let add = pb::NodeProto {
            name: format!("{}/bias", gemm.name),
            op_type: "Add".into(),
            input: vec![product, bias],
            output: vec![output],
            ..Default::default()
        };
        graph.node.splice(index..=index, [gemm, add]);
        index += 2;
    }
}
