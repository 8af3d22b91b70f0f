//! A pass over the optimised model that tract 0.23 runs slowly: a float32 `Softmax` over an
//! axis that is not the last walks each lane through ndarray views (YOLOv8's distribution
//! focal loss head, a softmax over axis 1 of `[1, 16, 4, anchors]`, takes a quarter to a third
//! of a run), while over the last axis of a contiguous tensor it runs tract's row kernel. The
//! pass moves the axis last, runs the softmax there and moves it back: the same values in,
//! the same lanes normalised (to the last bits of `exp`, as between tract's kernels).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::nn::Softmax;

/// Rewrites each single-axis float32 `Softmax` of `model` whose axis is not the last into
/// move-axis-last, softmax, move-back. Run on an optimised model: its optimiser would move
/// the axes back.
pub(crate) fn last_axis_softmax(mut model: TypedModel) -> TractResult<TypedModel> {
    for id in model.eval_order()? {
        let node = &model.nodes()[id];
        let Some(softmax) = node.op_as::<Softmax>() else {
            continue;
        };
        let fact = model.outlet_fact(node.inputs[0])?;
        let rank = fact.rank();
        let [axis] = softmax.axes.as_slice() else {
            continue;
        };
        if *axis + 1 == rank || fact.datum_type != f32::datum_type() {
            continue;
        }
        let (axis, last) = (*axis, rank - 1);
        let moved = Softmax {
            axes: tvec![last],
            ..softmax.clone()
        };
        let name = node.name.clone();
        let mut patch = TypedModelPatch::default();
        let input = patch.tap_model(&model, node.inputs[0])?;
        let wire = patch.wire_node(
            format!("{name}.axis_last"),
            AxisOp::Move(axis, last),
            &[input],
        )?;
        let wire = patch.wire_node(format!("{name}.on_last"), moved, &wire)?;
        let wire = patch.wire_node(format!("{name}.axis_back"), AxisOp::Move(last, axis), &wire)?;
        patch.shunt_outside(&model, OutletId::new(id, 0), wire[0])?;
        patch.apply(&mut model)?;
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A softmax over axis 1 of `[2, 3, 4]` computes, rewritten, what it computes as it is.
    #[test]
    fn a_softmax_moved_last_computes_the_same_lanes() -> TractResult<()> {
        let mut model = TypedModel::default();
        let input = model.add_source("x", f32::fact([2, 3, 4]))?;
        let softmax = Softmax {
            axes: tvec![1],
            ..Softmax::default()
        };
        let output = model.wire_node("softmax", softmax, &[input])?;
        model.select_output_outlets(&output)?;
        let values: Vec<f32> = (0..24).map(|v| (v as f32 * 0.37).sin() * 3.0).collect();
        let x = tensor1(&values).into_shape(&[2, 3, 4])?;
        let run = |model: TypedModel| -> TractResult<Tensor> {
            let out = model.into_runnable()?.run(tvec![x.clone().into_tvalue()])?;
            Ok(out[0].clone().into_tensor())
        };
        let rewritten = last_axis_softmax(model.clone())?;
        let axes: Vec<&[usize]> = rewritten
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<Softmax>().map(|s| s.axes.as_slice()))
            .collect();
        assert_eq!(axes, [&[2][..]], "one softmax left, on the last axis");
        let (before, after) = (run(model)?, run(rewritten)?);
        let (before, after) = (
            before.to_plain_array_view::<f32>()?,
            after.to_plain_array_view::<f32>()?,
        );
        assert_eq!(after.shape(), [2, 3, 4]);
        for (a, b) in before.iter().zip(after.iter()) {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
        // Each lane along axis 1 sums to one.
        for lane in after.lanes(tract_ndarray::Axis(1)) {
            assert!((lane.sum() - 1.0).abs() < 1e-5);
        }
        Ok(())
    }
}
