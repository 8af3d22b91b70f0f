//! The mask-file readers on arbitrary bytes: safetensors when the first byte is even, `.npz`
//! otherwise. Errors are fine; panics, hangs and unbounded allocations are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onnx_prune_core::replay::read_masks;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, contents)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let name = if selector % 2 == 0 {
        "masks.safetensors"
    } else {
        "masks.npz"
    };
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("writing the input");
    if let Ok(masks) = read_masks(&path) {
        for mask in masks {
            let elements: usize = mask.shape.iter().product();
            assert_eq!(elements, mask.keep.len(), "mask `{}`", mask.key);
        }
    }
});
