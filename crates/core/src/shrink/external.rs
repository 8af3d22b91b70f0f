//! External data of a shrunk model: a data file whose tensors shrink is written anew with only
//! the bytes the new model references, tensor after tensor in their old order, so that the
//! files on disk shrink with the parameters. Each tensor starts at a multiple of the alignment
//! its old offsets had (a power of two up to 4096: a page-aligned file stays page-aligned), and
//! its `offset` and `length` entries follow it. A file whose tensors keep their sizes keeps its
//! layout (an unchanged model is written byte for byte). Files whose ranges overlap, or that
//! hold sparse indices, keep their layout too: each new value at the start of its old range.

use std::collections::{BTreeMap, BTreeSet};

use onnx_splice::{encode_len_header, fields, LenField, Patch, Splice};

use crate::error::Result;
use crate::model::{Model, Payload};
use crate::proto;

/// The largest alignment kept, in bytes (a page).
const MAX_ALIGN: u64 = 4096;

/// The splices of every external data file, given the new data of the tensors that change
/// (`changed`, by tensor index) and the tensors the new model no longer has (`removed`, whose
/// bytes go); `offset` and `length` entries are rewritten in `splice`.
pub(super) fn lay_out<'m>(
    model: &'m Model,
    mut changed: BTreeMap<usize, Vec<u8>>,
    removed: &BTreeSet<usize>,
    splice: &mut Splice<'m>,
) -> Result<BTreeMap<&'m str, Splice<'m>>> {
    let mut members: BTreeMap<&str, Vec<(usize, u64, u64)>> = BTreeMap::new();
    let mut with_sparse: BTreeSet<&str> = BTreeSet::new();
    let mut with_removed: BTreeSet<&str> = BTreeSet::new();
    for (t, tensor) in model.tensors().iter().enumerate() {
        if let (true, Payload::External { location, .. }) = (removed.contains(&t), &tensor.payload)
        {
            with_removed.insert(location.as_str());
            continue;
        }
        if let Payload::External {
            location,
            offset,
            length,
            ..
        } = &tensor.payload
        {
            members
                .entry(location.as_str())
                .or_default()
                .push((t, *offset, *length));
        }
        if let Some(Payload::External { location, .. }) = tensor.sparse.as_ref().map(|s| &s.indices)
        {
            with_sparse.insert(location.as_str());
        }
    }
    let mut files: BTreeMap<&str, Splice> = model
        .external_files()
        .keys()
        .map(|l| (l.as_str(), Splice::default()))
        .collect();
    for (location, mut list) in members {
        list.sort_by_key(|&(t, offset, length)| (offset, length, t));
        let file = files.get_mut(location).expect("mapped external file");
        let resized = with_removed.contains(location)
            || list
                .iter()
                .any(|(t, _, len)| changed.get(t).is_some_and(|d| d.len() as u64 != *len));
        let overlapping = list.windows(2).any(|w| w[1].1 < w[0].1 + w[0].2);
        if !resized || overlapping || with_sparse.contains(location) {
            for (t, offset, length) in list {
                let Some(data) = changed.remove(&t) else {
                    continue;
                };
                let start = offset as usize;
                let len = data.len() as u64;
                file.replace(start..start + data.len(), Patch::Bytes(data), Vec::new());
                if len != length {
                    set_entry(model, t, "length", len, splice);
                }
            }
            continue;
        }
        let align = alignment(list.iter().map(|&(_, offset, _)| offset));
        let file_len = model.external_files()[location].len() as u64;
        let (mut read, mut written) = (0u64, 0u64);
        for (t, offset, length) in list {
            let at = written.next_multiple_of(align);
            if offset != read || at != written {
                let padding = vec![0u8; (at - written) as usize];
                file.replace(
                    read as usize..offset as usize,
                    Patch::Bytes(padding),
                    Vec::new(),
                );
            }
            let new_length = match changed.remove(&t) {
                Some(data) => {
                    let n = data.len() as u64;
                    let range = offset as usize..(offset + length) as usize;
                    file.replace(range, Patch::Bytes(data), Vec::new());
                    n
                }
                None => length,
            };
            if at != offset {
                set_entry(model, t, "offset", at, splice);
            }
            if new_length != length {
                set_entry(model, t, "length", new_length, splice);
            }
            read = offset + length;
            written = at + new_length;
        }
        if read < file_len {
            file.replace(
                read as usize..file_len as usize,
                Patch::Bytes(Vec::new()),
                Vec::new(),
            );
        }
    }
    Ok(files)
}

/// Bytes on disk of `model` (its file and external data files), and of what `splice` and
/// `external` (from [`lay_out`]) would write.
pub(super) fn bytes_before_after(
    model: &Model,
    splice: &Splice,
    external: &BTreeMap<&str, Splice>,
) -> (u64, u64) {
    let data = model.external_files();
    let before = model.bytes().len() + data.values().map(|f| f.len()).sum::<usize>();
    let after = splice.output_len(model.bytes().len())
        + external
            .iter()
            .map(|(location, s)| s.output_len(data[*location].len()))
            .sum::<usize>();
    (before as u64, after as u64)
}

/// The alignment the offsets share: the largest power of two dividing all of them, at most
/// [`MAX_ALIGN`].
fn alignment(offsets: impl Iterator<Item = u64>) -> u64 {
    let zeros = offsets
        .filter(|&o| o > 0)
        .map(u64::trailing_zeros)
        .min()
        .unwrap_or(0);
    (1u64 << zeros).min(MAX_ALIGN)
}

/// Sets the `external_data` entry `key` of tensor `t` to `value`: its value rewritten, or a new
/// entry at the end of the tensor when it has none.
fn set_entry<'m>(model: &'m Model, t: usize, key: &str, value: u64, splice: &mut Splice<'m>) {
    let tensor = &model.tensors()[t];
    let own = *tensor.enclosing.last().expect("a tensor's own field");
    let bytes = model.bytes();
    let text = value.to_string().into_bytes();
    let entries = fields(
        &bytes[own.payload_start..own.payload_end],
        own.payload_start,
    )
    .filter_map(|f| f.ok())
    .filter(|f| f.number == proto::tensor::EXTERNAL_DATA);
    for entry in entries {
        let Some(payload) = entry.payload() else {
            continue;
        };
        let inner: Vec<_> = fields(&bytes[payload.clone()], payload.start)
            .filter_map(|f| f.ok())
            .collect();
        let named = inner
            .iter()
            .find(|f| f.number == proto::entry::KEY)
            .and_then(|k| k.payload())
            .is_some_and(|r| bytes[r] == *key.as_bytes());
        let value = inner.iter().find(|f| f.number == proto::entry::VALUE);
        if let (true, Some(value)) = (named, value) {
            if let (Some(e), Some(v)) = (LenField::of(&entry), LenField::of(value)) {
                let mut enclosing = tensor.enclosing.clone();
                enclosing.extend([e, v]);
                splice.replace(
                    v.payload_start..v.payload_end,
                    Patch::Bytes(text),
                    enclosing,
                );
                return;
            }
        }
    }
    let mut body = Vec::new();
    encode_len_header(proto::entry::KEY, key.len(), &mut body);
    body.extend_from_slice(key.as_bytes());
    encode_len_header(proto::entry::VALUE, text.len(), &mut body);
    body.extend_from_slice(&text);
    let mut field = Vec::new();
    encode_len_header(proto::tensor::EXTERNAL_DATA, body.len(), &mut field);
    field.extend_from_slice(&body);
    splice.replace(
        own.payload_end..own.payload_end,
        Patch::Bytes(field),
        tensor.enclosing.clone(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_is_the_power_of_two_the_offsets_share() {
        assert_eq!(alignment([0, 4096, 8192 * 3].into_iter()), 4096);
        assert_eq!(alignment([0, 64, 200].into_iter()), 8);
        assert_eq!(alignment([0].into_iter()), 1);
        assert_eq!(alignment([1 << 20].into_iter()), MAX_ALIGN);
    }
}
