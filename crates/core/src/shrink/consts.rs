//! The values of the main graph's constant integer and float tensors, as the walk reads them
//! (shape arguments, exponents, clip bounds).

use crate::proto::DataType;

use super::analyze::Builder;

impl Builder<'_> {
    /// The integer values of the constant `name` (int64 or int32), if it is one.
    pub fn const_ints(&self, name: &str) -> Option<Vec<i64>> {
        let tensor = &self.model.tensors()[*self.consts.get(name)?];
        let bytes = crate::model::values::dense_bytes(self.model, tensor).ok()?;
        match tensor.dtype {
            DataType::Other(7) => Some(
                bytes
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect(),
            ),
            DataType::Other(6) => Some(
                bytes
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The float values of the constant `name`, if it is a float32 one.
    pub fn const_floats(&self, name: &str) -> Option<Vec<f32>> {
        let tensor = &self.model.tensors()[*self.consts.get(name)?];
        if tensor.dtype != DataType::Float32 {
            return None;
        }
        let bytes = crate::model::values::dense_bytes(self.model, tensor).ok()?;
        Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
        )
    }
}
