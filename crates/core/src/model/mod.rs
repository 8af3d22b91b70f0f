//! Loading an ONNX model: map the file, walk its protobuf fields once without copying tensor
//! data, and record the graph structure and where every constant tensor's bytes live.
//!
//! Design note: typed protobuf bindings would copy every tensor's data and could not write the
//! file back unchanged. The scan keeps byte spans instead, so a model of gigabytes costs its
//! mapping plus a small index, and [`crate::write`] writes the output from the input's bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::{Deref, Range};
use std::path::{Component, Path, PathBuf};

use onnx_splice::{Field, LenField};

use crate::error::{Error, Result};

mod mapped;
mod scan;
pub(crate) mod values;
pub(crate) mod weights;

pub use crate::proto::DataType;
pub use mapped::{catch_changed_inputs, Mapped};
pub use values::{count_zeros, dense_bytes, magnitude_key, stored_bytes};
pub use weights::{discover, discover_with, Consumer, Role, Weight, DEFAULT_MIN_PARAMS};

/// Subgraphs nested deeper than this are refused (a guard against hostile recursion).
pub const MAX_GRAPH_DEPTH: usize = 64;

/// The bytes of a file: memory-mapped, or owned when mapping is not possible.
pub enum FileBytes {
    /// A read-only mapping.
    Mapped(Mapped),
    /// Bytes read into memory.
    Owned(Vec<u8>),
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(map) => map,
            FileBytes::Owned(bytes) => bytes,
        }
    }
}

impl FileBytes {
    /// Maps `path` read-only; `populate` faults every page in up front (for data read whole).
    pub fn open(path: &Path, populate: bool) -> Result<FileBytes> {
        FileBytes::open_as(path, path, populate)
    }

    /// Maps `read` read-only, named `shown` in messages (a file that has no name of its own
    /// yet, read through `/proc/self/fd`).
    pub(crate) fn open_as(read: &Path, shown: &Path, populate: bool) -> Result<FileBytes> {
        let file = File::open(read).map_err(|e| Error::io(shown, e))?;
        let meta = file.metadata().map_err(|e| Error::io(shown, e))?;
        if meta.is_dir() {
            return Err(Error::invalid(shown, "is a directory, not a file"));
        }
        if !meta.is_file() {
            return Err(Error::invalid(
                shown,
                "is a pipe or a device, not a file: onnx-prune maps its inputs and reads them more than once; save the model to a file first",
            ));
        }
        if meta.len() == 0 {
            return Ok(FileBytes::Owned(Vec::new()));
        }
        // SAFETY: the mapping is read-only. Another program truncating the file while we run
        // makes reads of the vanished pages raise SIGBUS, which `catch_changed_inputs` turns
        // into a message naming the file.
        let mut options = memmap2::MmapOptions::new();
        if populate {
            options.populate();
        }
        match unsafe { options.map(&file) } {
            Ok(map) => Ok(FileBytes::Mapped(Mapped::new(map, shown))),
            Err(_) => std::fs::read(read)
                .map(FileBytes::Owned)
                .map_err(|e| Error::io(shown, e)),
        }
    }
}

/// Model-level facts.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ModelInfo {
    /// `ir_version`.
    pub ir_version: i64,
    /// `producer_name`.
    pub producer_name: String,
    /// `producer_version`.
    pub producer_version: String,
    /// Operator sets imported, as (domain, version); the default domain is `""`.
    pub opsets: Vec<(String, i64)>,
    /// Name of the main graph.
    pub graph_name: String,
}

impl ModelInfo {
    /// The version of the default (`ai.onnx`) operator set; 1 when none is imported.
    pub fn default_opset(&self) -> i64 {
        self.opsets
            .iter()
            .find(|(domain, _)| domain.is_empty() || domain == "ai.onnx")
            .map_or(1, |(_, v)| *v)
    }
}

/// A graph: the main graph or a subgraph held by a node attribute.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Where the graph lives: `""` for the main graph, else `<node>/<attribute>` segments joined
    /// by `/` (e.g. `If_0/then_branch`).
    pub path: String,
    /// Index of the enclosing graph.
    pub parent: Option<usize>,
    /// Nodes in file order.
    pub nodes: Vec<Node>,
    /// Declared inputs (`graph.input`), initializers listed there included.
    pub inputs: Vec<ValueInfo>,
}

/// A declared graph input: name, element type and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueInfo {
    /// Name.
    pub name: String,
    /// `TensorProto.DataType` number; 0 when not a tensor or not given.
    pub elem_type: i32,
    /// Dimensions: `None` where symbolic or not given. Empty when no shape is given, and for a
    /// scalar.
    pub dims: Vec<Option<u64>>,
    /// Whether a shape is declared: with `dims` empty, a scalar rather than an unknown rank.
    pub has_shape: bool,
}

/// A node, with what weight discovery needs of it.
#[derive(Debug, Clone)]
pub struct Node {
    /// `name` (may be empty).
    pub name: String,
    /// `op_type`.
    pub op_type: String,
    /// `domain`.
    pub domain: String,
    /// Input names (`""` for an omitted optional input).
    pub inputs: Vec<String>,
    /// Output names.
    pub outputs: Vec<String>,
    /// Integer attributes, by name.
    pub ints: BTreeMap<String, i64>,
    /// Integer-list attributes (`pads`, `strides`, ...), by name.
    pub int_lists: BTreeMap<String, Vec<i64>>,
    /// Float attributes (`alpha`, `beta`, ...), by name.
    pub floats: BTreeMap<String, f32>,
    /// String attributes (`auto_pad`, ...), by name.
    pub strings: BTreeMap<String, String>,
    /// Subgraphs held by attributes: (attribute name, graph index).
    pub subgraphs: Vec<(String, usize)>,
}

impl Node {
    /// The node's name, or `<op_type>_<index>` when it has none.
    pub fn label(&self, index: usize) -> String {
        if self.name.is_empty() {
            format!("{}_{index}", self.op_type)
        } else {
            self.name.clone()
        }
    }
}

/// Where a constant tensor is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `GraphProto.initializer`.
    Initializer,
    /// `GraphProto.sparse_initializer`.
    SparseInitializer,
    /// The `value` attribute of the `Constant` node at this index of its graph.
    Constant(usize),
    /// The `sparse_value` attribute of the `Constant` node at this index of its graph.
    SparseConstant(usize),
}

/// Where a tensor's elements are stored.
#[derive(Debug, Clone)]
pub enum Payload {
    /// `raw_data`: the field, whose payload holds the little-endian elements.
    Raw(LenField),
    /// A typed repeated field (`float_data`, `int32_data`, ...), packed or not, possibly in
    /// several pieces.
    Typed {
        /// The field number.
        number: u32,
        /// Every occurrence of the field, in file order.
        pieces: Vec<Field>,
    },
    /// In an external file, relative to the model's directory.
    External {
        /// `location` as written in the model.
        location: String,
        /// Byte offset in that file.
        offset: u64,
        /// Byte length.
        length: u64,
        /// The `external_data` entry holding the location and its `value` field, so that an
        /// output can name another file.
        location_field: Option<[LenField; 2]>,
    },
    /// No data field (a tensor of zero elements, or all values defaulted).
    Empty,
}

/// Sparse storage (`SparseTensorProto`) of a tensor.
#[derive(Debug, Clone)]
pub struct SparseLayout {
    /// Number of stored values.
    pub nnz: u64,
    /// The `indices` tensor's shape (`[nnz]` linearised or `[nnz, rank]`).
    pub indices_dims: Vec<i64>,
    /// The `indices` tensor's element type.
    pub indices_type: DataType,
    /// Where the indices are stored.
    pub indices: Payload,
}

/// A constant tensor of the graph: where it lives and where its bytes are.
#[derive(Debug, Clone)]
pub struct Tensor {
    /// Index of the graph holding it.
    pub graph: usize,
    /// How the graph holds it.
    pub source: Source,
    /// The tensor's name (for a `Constant`, the node's output name).
    pub name: String,
    /// Logical shape (for sparse tensors, the dense shape).
    pub dims: Vec<i64>,
    /// Element type.
    pub dtype: DataType,
    /// Number of logical elements.
    pub elements: u64,
    /// The stored elements (for sparse tensors, the values).
    pub payload: Payload,
    /// Present for sparse tensors.
    pub sparse: Option<SparseLayout>,
    /// The whole field holding the `TensorProto` (or `SparseTensorProto`) in its parent.
    pub field: Range<usize>,
    /// Length-delimited fields enclosing the tensor message, outermost first, ending with the
    /// tensor message's own field.
    pub enclosing: Vec<LenField>,
}

/// A loaded ONNX model: the file's bytes and an index of its graphs and constant tensors.
pub struct Model {
    path: PathBuf,
    bytes: FileBytes,
    info: ModelInfo,
    graphs: Vec<Graph>,
    tensors: Vec<Tensor>,
    external: BTreeMap<String, FileBytes>,
}

impl Model {
    /// Loads the model at `path`; external data files are mapped and checked against the
    /// offsets that reference them.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        Model::load_from(path, path)
    }

    /// Loads the model whose bytes are read from `read` as if it were at `path` (its external
    /// data beside `path`, `path` in messages): a model prepared for `path` and not yet in
    /// place.
    pub fn load_from(read: &Path, path: &Path) -> Result<Model> {
        // Populated: one pass of page faults instead of one per page from many threads.
        let bytes = FileBytes::open_as(read, path, true)?;
        if bytes.is_empty() {
            return Err(Error::invalid(path, "is empty, not an ONNX model"));
        }
        let (info, graphs, tensors) = scan::scan(&bytes)
            .map_err(|msg| Error::invalid(path, format!("not a valid ONNX model: {msg}")))?;
        let external = map_external_files(path, &tensors)?;
        Ok(Model {
            path: path.to_path_buf(),
            bytes,
            info,
            graphs,
            tensors,
            external,
        })
    }

    /// The inputs the main graph declares that are not initializers: what running it needs.
    pub fn graph_inputs(&self) -> Vec<&ValueInfo> {
        let Some(main) = self.graphs.first() else {
            return Vec::new();
        };
        let initializers: std::collections::BTreeSet<&str> = self
            .tensors
            .iter()
            .filter(|t| t.graph == 0 && t.source == Source::Initializer)
            .map(|t| t.name.as_str())
            .collect();
        main.inputs
            .iter()
            .filter(|input| !initializers.contains(input.name.as_str()))
            .collect()
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Model-level facts.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// All graphs; index 0 is the main graph.
    pub fn graphs(&self) -> &[Graph] {
        &self.graphs
    }

    /// Every constant tensor, in file order within each graph.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// The external data files, by `location`.
    pub fn external_files(&self) -> &BTreeMap<String, FileBytes> {
        &self.external
    }

    /// The bytes of `payload`: raw data in the model or a range of an external file. `None` for
    /// typed and empty payloads.
    pub fn raw_bytes(&self, payload: &Payload) -> Option<&[u8]> {
        match payload {
            Payload::Raw(field) => Some(&self.bytes[field.payload_start..field.payload_end]),
            Payload::External {
                location,
                offset,
                length,
                ..
            } => {
                let file = &self.external[location];
                Some(&file[*offset as usize..(*offset + *length) as usize])
            }
            _ => None,
        }
    }
}

/// Checks that an external `location` stays inside the model's directory, as the ONNX checker does.
fn safe_location(location: &str) -> bool {
    let path = Path::new(location);
    !location.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn map_external_files(model: &Path, tensors: &[Tensor]) -> Result<BTreeMap<String, FileBytes>> {
    let dir = model.parent().unwrap_or(Path::new("."));
    let mut files: BTreeMap<String, FileBytes> = BTreeMap::new();
    let payloads = tensors.iter().flat_map(|t| {
        let indices = t.sparse.as_ref().map(|s| (&s.indices, t));
        std::iter::once((&t.payload, t)).chain(indices)
    });
    for (payload, tensor) in payloads {
        let Payload::External {
            location,
            offset,
            length,
            ..
        } = payload
        else {
            continue;
        };
        if !safe_location(location) {
            return Err(Error::invalid(
                model,
                format!(
                    "tensor `{}` has external data location `{location}`, which leaves the model's directory",
                    tensor.name
                ),
            ));
        }
        if !files.contains_key(location) {
            let file_path = dir.join(location);
            let bytes = FileBytes::open(&file_path, true).map_err(|e| match e {
                Error::Io { error, .. } => Error::invalid(
                    model,
                    format!(
                        "tensor `{}` has its data in `{}`, which cannot be read: {error}",
                        tensor.name,
                        file_path.display()
                    ),
                ),
                other => other,
            })?;
            files.insert(location.clone(), bytes);
        }
        let available = files[location].len() as u64;
        if offset
            .checked_add(*length)
            .is_none_or(|end| end > available)
        {
            return Err(Error::invalid(
                dir.join(location),
                format!(
                    "tensor `{}` needs bytes {offset}..{} but the file holds {available}",
                    tensor.name,
                    offset.saturating_add(*length)
                ),
            ));
        }
    }
    Ok(files)
}

/// The number of elements of a shape, or `None` for a negative or overflowing shape.
pub fn element_count(dims: &[i64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |n, &d| {
        u64::try_from(d).ok().and_then(|d| n.checked_mul(d))
    })
}
