//! A model past 2 GiB, as exporters save them: the graph in the `.onnx` file, the weights in an
//! external data file of 2 GiB and more, one tensor starting past offset 2^31. Generated in a
//! temporary directory a chunk at a time, pruned through the CLI, and checked element by element
//! where the offsets no longer fit in 32 bits.

use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::common::{arg, model_bytes, stdout_ok};

/// Four 512 MiB weights, then a 1 MiB one starting at exactly 2 GiB.
const WEIGHTS: [(i64, i64); 5] = [
    (8192, 16384),
    (8192, 16384),
    (8192, 16384),
    (8192, 16384),
    (512, 512),
];

/// Deterministic float32 values in (-1, 1), streamed into `out` a chunk at a time.
fn write_values(out: &mut impl Write, count: u64, state: &mut u64) {
    let mut chunk = Vec::with_capacity(4 << 20);
    let mut left = count;
    while left > 0 {
        chunk.clear();
        let n = left.min(1 << 20);
        for _ in 0..n {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            let value = (*state >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
            chunk.extend_from_slice(&value.to_le_bytes());
        }
        out.write_all(&chunk).unwrap();
        left -= n;
    }
}

/// Writes `dir/big.onnx` and `dir/weights.bin`; returns each weight's byte offset.
fn big_model(dir: &Path) -> Vec<u64> {
    let mut data = BufWriter::new(std::fs::File::create(dir.join("weights.bin")).unwrap());
    let mut graph = onnx_protobuf::GraphProto::new();
    let (mut offset, mut offsets, mut state) = (0u64, Vec::new(), 0x2545_f491_4f6c_dd1du64);
    for (i, &(rows, cols)) in WEIGHTS.iter().enumerate() {
        let length = (rows * cols * 4) as u64;
        write_values(&mut data, (rows * cols) as u64, &mut state);
        let mut tensor = onnx_protobuf::TensorProto::new();
        tensor.name = format!("layer{i}.weight");
        tensor.data_type = 1;
        tensor.dims = vec![rows, cols];
        tensor.data_location = protobuf::EnumOrUnknown::from_i32(1);
        for (key, value) in [
            ("location", "weights.bin".to_string()),
            ("offset", offset.to_string()),
            ("length", length.to_string()),
        ] {
            let mut entry = onnx_protobuf::StringStringEntryProto::new();
            entry.key = key.into();
            entry.value = value;
            tensor.external_data.push(entry);
        }
        graph.initializer.push(tensor);
        offsets.push(offset);
        offset += length;
    }
    data.flush().unwrap();
    std::fs::write(dir.join("big.onnx"), model_bytes(graph)).unwrap();
    offsets
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut file = std::fs::File::open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    let mut bytes = vec![0; len];
    file.read_exact(&mut bytes).unwrap();
    bytes
}

/// What the test writes: the input's 2 GiB and the output's, with room to spare.
const SCRATCH_BYTES: u64 = 5 << 30;

/// A scratch directory with room for [`SCRATCH_BYTES`]: the system's temporary directory, or
/// the RAM-backed `/dev/shm` when the disk is short (CI machines have 24 GiB of memory and
/// sometimes only a few GiB of disk).
fn scratch_dir() -> tempfile::TempDir {
    let free = |dir: &Path| {
        rustix::fs::statvfs(dir)
            .map(|s| s.f_bavail * s.f_frsize)
            .unwrap_or(0)
    };
    let candidates = [std::env::temp_dir(), "/dev/shm".into()];
    let roomy = candidates
        .iter()
        .find(|dir| free(dir) >= SCRATCH_BYTES)
        .unwrap_or_else(|| {
            let seen: Vec<String> = candidates
                .iter()
                .map(|dir| format!("{}: {} MiB free", dir.display(), free(dir) >> 20))
                .collect();
            panic!(
                "the 2 GiB model needs {} GiB of scratch space ({})",
                SCRATCH_BYTES >> 30,
                seen.join(", ")
            )
        });
    tempfile::tempdir_in(roomy).unwrap()
}

#[test]
fn a_model_past_2_gib_is_pruned_end_to_end() {
    let dir = scratch_dir();
    let offsets = big_model(dir.path());
    let last = *offsets.last().unwrap();
    assert_eq!(
        last,
        1 << 31,
        "the last weight starts past what 32 bits hold"
    );
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("pruned.onnx");
    let model = dir.path().join("big.onnx");
    let args = ["prune", arg(&model), "-o", arg(&out), "--sparsity", "0.5"];
    stdout_ok(&[&args[..], &["--include", ".", "--min-params", "0"]].concat());

    // The same layout beside the output, every weight exactly half zeros.
    let input_data = dir.path().join("weights.bin");
    let output_data = out_dir.join("weights.bin");
    let size = std::fs::metadata(&input_data).unwrap().len();
    assert_eq!(std::fs::metadata(&output_data).unwrap().len(), size);
    let inspected: serde_json::Value =
        serde_json::from_str(&stdout_ok(&["inspect", arg(&out), "--json"])).unwrap();
    let weights = inspected["weights"].as_array().unwrap();
    assert_eq!(weights.len(), WEIGHTS.len());
    for weight in weights {
        let params = weight["params"].as_u64().unwrap();
        assert_eq!(weight["zeros"].as_u64().unwrap(), params / 2, "{weight}");
    }
    // Past 2^31: each element kept as it was or multiplied by zero, the smaller half zeroed.
    let len = (size - last) as usize;
    let (before, after) = (
        read_at(&input_data, last, len),
        read_at(&output_data, last, len),
    );
    let pairs: Vec<(f32, f32)> = before
        .chunks_exact(4)
        .zip(after.chunks_exact(4))
        .map(|(b, a)| {
            (
                f32::from_le_bytes(b.try_into().unwrap()),
                f32::from_le_bytes(a.try_into().unwrap()),
            )
        })
        .collect();
    let largest_zeroed = pairs
        .iter()
        .filter(|(_, a)| *a == 0.0)
        .map(|(b, _)| b.abs())
        .fold(0.0f32, f32::max);
    for (b, a) in pairs {
        let zeroed = b * 0.0;
        assert!(
            a.to_bits() == b.to_bits() || a.to_bits() == zeroed.to_bits(),
            "{b} became {a}"
        );
        if a != 0.0 {
            assert!(b.abs() >= largest_zeroed, "{b} kept below {largest_zeroed}");
        }
    }
}
