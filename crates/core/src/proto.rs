//! Field numbers of the ONNX messages this crate reads (`onnx.proto`, IR version 10), and the
//! tensor element types it understands.

/// `ModelProto` fields.
#[allow(missing_docs)]
pub mod model {
    pub const IR_VERSION: u32 = 1;
    pub const PRODUCER_NAME: u32 = 2;
    pub const PRODUCER_VERSION: u32 = 3;
    pub const GRAPH: u32 = 7;
    pub const OPSET_IMPORT: u32 = 8;
}

/// `OperatorSetIdProto` fields.
#[allow(missing_docs)]
pub mod opset {
    pub const DOMAIN: u32 = 1;
    pub const VERSION: u32 = 2;
}

/// `GraphProto` fields.
#[allow(missing_docs)]
pub mod graph {
    pub const NODE: u32 = 1;
    pub const NAME: u32 = 2;
    pub const INITIALIZER: u32 = 5;
    pub const INPUT: u32 = 11;
    pub const VALUE_INFO: u32 = 13;
    pub const SPARSE_INITIALIZER: u32 = 15;
}

/// `ValueInfoProto` fields, and those of the type messages inside it: `TypeProto`
/// (`tensor_type`), `TypeProto.Tensor` (`elem_type`, `shape`), `TensorShapeProto` (`dim`) and
/// `TensorShapeProto.Dimension` (`dim_value`).
#[allow(missing_docs)]
pub mod value_info {
    pub const NAME: u32 = 1;
    pub const TYPE: u32 = 2;
    pub const TENSOR_TYPE: u32 = 1;
    pub const ELEM_TYPE: u32 = 1;
    pub const SHAPE: u32 = 2;
    pub const DIM: u32 = 1;
    pub const DIM_VALUE: u32 = 1;
}

/// `NodeProto` fields.
#[allow(missing_docs)]
pub mod node {
    pub const INPUT: u32 = 1;
    pub const OUTPUT: u32 = 2;
    pub const NAME: u32 = 3;
    pub const OP_TYPE: u32 = 4;
    pub const ATTRIBUTE: u32 = 5;
    pub const DOMAIN: u32 = 7;
}

/// `AttributeProto` fields.
#[allow(missing_docs)]
pub mod attribute {
    pub const NAME: u32 = 1;
    pub const F: u32 = 2;
    pub const I: u32 = 3;
    pub const S: u32 = 4;
    pub const T: u32 = 5;
    pub const G: u32 = 6;
    pub const INTS: u32 = 8;
    pub const GRAPHS: u32 = 11;
    pub const SPARSE_TENSOR: u32 = 22;
}

/// `TensorProto` fields.
#[allow(missing_docs)]
pub mod tensor {
    pub const DIMS: u32 = 1;
    pub const DATA_TYPE: u32 = 2;
    pub const FLOAT_DATA: u32 = 4;
    pub const INT32_DATA: u32 = 5;
    pub const STRING_DATA: u32 = 6;
    pub const INT64_DATA: u32 = 7;
    pub const NAME: u32 = 8;
    pub const RAW_DATA: u32 = 9;
    pub const DOUBLE_DATA: u32 = 10;
    pub const UINT64_DATA: u32 = 11;
    pub const EXTERNAL_DATA: u32 = 13;
    pub const DATA_LOCATION: u32 = 14;
    /// `DataLocation::EXTERNAL`.
    pub const LOCATION_EXTERNAL: u64 = 1;
}

/// `SparseTensorProto` fields.
#[allow(missing_docs)]
pub mod sparse {
    pub const VALUES: u32 = 1;
    pub const INDICES: u32 = 2;
    pub const DIMS: u32 = 3;
}

/// `StringStringEntryProto` fields.
#[allow(missing_docs)]
pub mod entry {
    pub const KEY: u32 = 1;
    pub const VALUE: u32 = 2;
}

/// Tensor element types (`TensorProto.DataType`) by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// 32-bit IEEE float.
    Float32,
    /// 16-bit IEEE float.
    Float16,
    /// bfloat16.
    BFloat16,
    /// 64-bit IEEE float.
    Float64,
    /// Any other element type, by its ONNX code.
    Other(i32),
}

impl DataType {
    /// The element type for an ONNX `data_type` code.
    pub fn from_code(code: i32) -> DataType {
        match code {
            1 => DataType::Float32,
            10 => DataType::Float16,
            11 => DataType::Float64,
            16 => DataType::BFloat16,
            other => DataType::Other(other),
        }
    }

    /// The ONNX `data_type` code.
    pub fn code(self) -> i32 {
        match self {
            DataType::Float32 => 1,
            DataType::Float16 => 10,
            DataType::Float64 => 11,
            DataType::BFloat16 => 16,
            DataType::Other(code) => code,
        }
    }

    /// Whether this is a floating-point type that pruning understands.
    pub fn is_float(self) -> bool {
        !matches!(self, DataType::Other(_))
    }

    /// Size of one element in `raw_data`, where known.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DataType::Float32 => 4,
            DataType::Float16 | DataType::BFloat16 => 2,
            DataType::Float64 => 8,
            DataType::Other(2 | 3 | 9) => 1,
            DataType::Other(4 | 5) => 2,
            DataType::Other(6 | 12) => 4,
            DataType::Other(7 | 13 | 14) => 8,
            DataType::Other(15) => 16,
            DataType::Other(_) => return None,
        })
    }

    /// The typed `TensorProto` field that holds this type when `raw_data` is not used.
    pub fn typed_field(self) -> u32 {
        match self {
            DataType::Float32 | DataType::Other(14) => tensor::FLOAT_DATA,
            DataType::Float64 | DataType::Other(15) => tensor::DOUBLE_DATA,
            DataType::Other(7) => tensor::INT64_DATA,
            DataType::Other(12 | 13) => tensor::UINT64_DATA,
            DataType::Other(8) => tensor::STRING_DATA,
            _ => tensor::INT32_DATA,
        }
    }

    /// Lower-case name as ONNX spells it (`float`, `float16`, `bfloat16`, `double`, ...).
    pub fn name(self) -> String {
        const NAMES: [&str; 24] = [
            "undefined",
            "float",
            "uint8",
            "int8",
            "uint16",
            "int16",
            "int32",
            "int64",
            "string",
            "bool",
            "float16",
            "double",
            "uint32",
            "uint64",
            "complex64",
            "complex128",
            "bfloat16",
            "float8e4m3fn",
            "float8e4m3fnuz",
            "float8e5m2",
            "float8e5m2fnuz",
            "uint4",
            "int4",
            "float4e2m1",
        ];
        let code = self.code();
        usize::try_from(code)
            .ok()
            .and_then(|i| NAMES.get(i))
            .map(|s| s.to_string())
            .unwrap_or_else(|| format!("type{code}"))
    }
}
