//! Byte-faithful protobuf editing.
//!
//! Parsing a protobuf message into typed structs and serialising it again does not give back
//! the same bytes: proto3 bindings drop explicitly written default values and write fields in
//! declaration order. This crate edits a message *in its own bytes* instead:
//!
//! 1. [`fields`] walks the fields of one message without copying anything, giving each field's
//!    absolute byte spans;
//! 2. a [`Splice`] collects replacements of byte spans, each with the chain of length-delimited
//!    fields ([`LenField`]) that encloses it;
//! 3. [`Splice::write_to`] copies the original bytes, writes the replacements, and re-encodes
//!    only the length prefixes of the enclosing messages, whose sizes changed.
//!
//! With no replacement, the output is the input, byte for byte.
//!
//! ```
//! use onnx_splice::{fields, LenField, Patch, Splice, Value};
//!
//! // message { 1: "abc" }  nested in  message { 2: { ... } }
//! let bytes = [0x12, 0x05, 0x0a, 0x03, b'a', b'b', b'c'];
//! let outer = fields(&bytes, 0).next().unwrap().unwrap();
//! let Value::Len(payload) = outer.value.clone() else { unreachable!() };
//! let inner = fields(&bytes[payload.clone()], payload.start).next().unwrap().unwrap();
//! let Value::Len(text) = inner.value.clone() else { unreachable!() };
//!
//! let mut splice = Splice::default();
//! splice.replace(
//!     text,
//!     Patch::Bytes(b"abcdef".to_vec()),
//!     vec![LenField::of(&outer).unwrap(), LenField::of(&inner).unwrap()],
//! );
//! let mut out = Vec::new();
//! splice.write_to(&bytes, &mut out).unwrap();
//! assert_eq!(out, [0x12, 0x08, 0x0a, 0x06, b'a', b'b', b'c', b'd', b'e', b'f']);
//! ```
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::ops::Range;

use prost::encoding::{decode_varint, encode_varint, encoded_len_varint};

/// Errors found while walking protobuf wire data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A varint ran past the end of the data or past ten bytes.
    #[error("malformed varint at byte {offset}")]
    Varint {
        /// Absolute offset of the varint.
        offset: usize,
    },
    /// A field key had field number 0 or an unknown wire type.
    #[error("invalid field key at byte {offset}")]
    Key {
        /// Absolute offset of the key.
        offset: usize,
    },
    /// A field claims more bytes than its enclosing message holds.
    #[error("field {field} at byte {offset} claims {claimed} bytes but only {available} remain")]
    Truncated {
        /// Field number.
        field: u32,
        /// Absolute offset of the field's key.
        offset: usize,
        /// Bytes claimed.
        claimed: u64,
        /// Bytes left in the enclosing message.
        available: usize,
    },
    /// Group wire types (deprecated since proto2) are not supported.
    #[error("unsupported group wire type in field {field} at byte {offset}")]
    Group {
        /// Field number.
        field: u32,
        /// Absolute offset of the field's key.
        offset: usize,
    },
}

/// The decoded value of one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1: eight little-endian bytes.
    Fixed64(u64),
    /// Wire type 5: four little-endian bytes.
    Fixed32(u32),
    /// Wire type 2: absolute span of the payload (after the length prefix).
    Len(Range<usize>),
}

/// One field of a message, with absolute byte offsets into the whole buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Field number.
    pub number: u32,
    /// Span of the whole field: key, length prefix (if any) and value.
    pub span: Range<usize>,
    /// Start of the length prefix for length-delimited fields, else the start of the value.
    pub value_start: usize,
    /// The value.
    pub value: Value,
}

impl Field {
    /// The payload span of a length-delimited field.
    pub fn payload(&self) -> Option<Range<usize>> {
        match &self.value {
            Value::Len(range) => Some(range.clone()),
            _ => None,
        }
    }
}

/// Iterates over the fields of the message held in `data`, whose first byte sits at absolute
/// offset `base` in the whole buffer. Nothing is copied.
pub fn fields(data: &[u8], base: usize) -> Fields<'_> {
    Fields {
        data,
        base,
        pos: 0,
        failed: false,
    }
}

/// Iterator returned by [`fields`].
pub struct Fields<'a> {
    data: &'a [u8],
    base: usize,
    pos: usize,
    failed: bool,
}

impl Fields<'_> {
    fn varint(&mut self) -> Result<u64, WireError> {
        let offset = self.base + self.pos;
        let mut rest = &self.data[self.pos..];
        let before = rest.len();
        let value = decode_varint(&mut rest).map_err(|_| WireError::Varint { offset })?;
        self.pos += before - rest.len();
        Ok(value)
    }

    fn fixed<const N: usize>(&mut self, field: u32, offset: usize) -> Result<[u8; N], WireError> {
        let available = self.data.len() - self.pos;
        if available < N {
            return Err(WireError::Truncated {
                field,
                offset,
                claimed: N as u64,
                available,
            });
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.data[self.pos..self.pos + N]);
        self.pos += N;
        Ok(out)
    }

    fn next_field(&mut self) -> Result<Field, WireError> {
        let start = self.pos;
        let offset = self.base + start;
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| WireError::Key { offset })?;
        if number == 0 {
            return Err(WireError::Key { offset });
        }
        let value_start = self.base + self.pos;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(self.fixed::<8>(number, offset)?)),
            5 => Value::Fixed32(u32::from_le_bytes(self.fixed::<4>(number, offset)?)),
            2 => {
                let len = self.varint()?;
                let available = self.data.len() - self.pos;
                if len > available as u64 {
                    return Err(WireError::Truncated {
                        field: number,
                        offset,
                        claimed: len,
                        available,
                    });
                }
                let payload_start = self.base + self.pos;
                self.pos += len as usize;
                Value::Len(payload_start..self.base + self.pos)
            }
            3 | 4 => {
                return Err(WireError::Group {
                    field: number,
                    offset,
                })
            }
            _ => return Err(WireError::Key { offset }),
        };
        Ok(Field {
            number,
            span: offset..self.base + self.pos,
            value_start,
            value,
        })
    }
}

impl Iterator for Fields<'_> {
    type Item = Result<Field, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.data.len() {
            return None;
        }
        let field = self.next_field();
        self.failed = field.is_err();
        Some(field)
    }
}

/// A length-delimited field that encloses an edited span: its length prefix must be rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LenField {
    /// Absolute offset of the length varint.
    pub prefix_start: usize,
    /// Absolute offset of the payload (end of the length varint).
    pub payload_start: usize,
    /// Absolute end of the payload.
    pub payload_end: usize,
}

impl LenField {
    /// The length prefix of `field`, if it is length-delimited.
    pub fn of(field: &Field) -> Option<LenField> {
        let payload = field.payload()?;
        Some(LenField {
            prefix_start: field.value_start,
            payload_start: payload.start,
            payload_end: payload.end,
        })
    }
}

/// Writes a streamed replacement.
pub type WriteFn<'a> = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'a>;

/// Bytes that replace a span.
pub enum Patch<'a> {
    /// Replacement bytes held in memory.
    Bytes(Vec<u8>),
    /// Replacement bytes produced while writing, so that large outputs need not be held in
    /// memory at once. The writer must produce exactly `len` bytes.
    Stream {
        /// Exact number of bytes `write` produces.
        len: usize,
        /// Writes the replacement.
        write: WriteFn<'a>,
    },
}

impl Patch<'_> {
    /// Number of bytes the patch writes.
    pub fn len(&self) -> usize {
        match self {
            Patch::Bytes(bytes) => bytes.len(),
            Patch::Stream { len, .. } => *len,
        }
    }

    /// Whether the patch writes nothing (a deletion).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Edit<'a> {
    span: Range<usize>,
    patch: Patch<'a>,
    enclosing: Vec<LenField>,
}

/// A set of span replacements over one buffer; see the [crate documentation](crate).
#[derive(Default)]
pub struct Splice<'a> {
    edits: Vec<Edit<'a>>,
}

/// Errors from [`Splice::write_to`].
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    /// Two replacements overlap.
    #[error("replacements overlap at bytes {first:?} and {second:?}")]
    Overlap {
        /// The earlier span.
        first: Range<usize>,
        /// The later span.
        second: Range<usize>,
    },
    /// A replacement lies outside the buffer or outside a field said to enclose it.
    #[error("replacement {span:?} is not inside its enclosing field or the buffer")]
    OutOfBounds {
        /// The offending span.
        span: Range<usize>,
    },
    /// A streamed patch wrote another number of bytes than it declared.
    #[error("a streamed replacement declared {declared} bytes but wrote {written}")]
    PatchLength {
        /// Declared length.
        declared: usize,
        /// Bytes written.
        written: usize,
    },
    /// Writing the output failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl<'a> Splice<'a> {
    /// Replaces `span` with `patch`. `enclosing` lists every length-delimited field that contains
    /// the span, outermost first; their length prefixes are rewritten.
    pub fn replace(&mut self, span: Range<usize>, patch: Patch<'a>, enclosing: Vec<LenField>) {
        self.edits.push(Edit {
            span,
            patch,
            enclosing,
        });
    }

    /// Whether no replacement was recorded.
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Size in bytes of the output for an input of `input_len` bytes.
    pub fn output_len(&self, input_len: usize) -> usize {
        let prefixes = self.new_prefixes();
        let edit_delta: isize = self
            .edits
            .iter()
            .map(|e| e.patch.len() as isize - e.span.len() as isize)
            .sum();
        let prefix_delta: isize = prefixes
            .iter()
            .map(|(field, bytes)| {
                bytes.len() as isize - (field.payload_start - field.prefix_start) as isize
            })
            .sum();
        (input_len as isize + edit_delta + prefix_delta) as usize
    }

    /// The new length prefix of every enclosing field, and each field's size change.
    fn new_prefixes(&self) -> BTreeMap<LenField, Vec<u8>> {
        // Change in payload size of every enclosing field, from the edits inside it.
        let mut delta: BTreeMap<LenField, isize> = BTreeMap::new();
        // Strict ancestors of every enclosing field, to propagate prefix size changes upwards.
        let mut ancestors: BTreeMap<LenField, Vec<LenField>> = BTreeMap::new();
        for edit in &self.edits {
            let change = edit.patch.len() as isize - edit.span.len() as isize;
            for (depth, field) in edit.enclosing.iter().enumerate() {
                *delta.entry(*field).or_default() += change;
                ancestors
                    .entry(*field)
                    .or_insert_with(|| edit.enclosing[..depth].to_vec());
            }
        }
        // Deepest fields first: their new prefix size changes their ancestors' payloads.
        let mut order: Vec<LenField> = delta.keys().copied().collect();
        order.sort_by_key(|field| std::cmp::Reverse(ancestors[field].len()));
        let mut prefixes = BTreeMap::new();
        for field in order {
            let new_len = (field.payload_end - field.payload_start) as isize + delta[&field];
            let mut prefix = Vec::with_capacity(encoded_len_varint(new_len as u64));
            encode_varint(new_len as u64, &mut prefix);
            let growth =
                prefix.len() as isize - (field.payload_start - field.prefix_start) as isize;
            if growth != 0 {
                for ancestor in &ancestors[&field] {
                    *delta
                        .get_mut(ancestor)
                        .expect("ancestor is an enclosing field") += growth;
                }
            }
            prefixes.insert(field, prefix);
        }
        prefixes
    }

    /// Writes `input` with every replacement applied to `out`.
    pub fn write_to(self, input: &[u8], out: &mut dyn Write) -> Result<(), SpliceError> {
        for edit in &self.edits {
            let inside = edit.span.end <= input.len()
                && edit.span.start <= edit.span.end
                && edit
                    .enclosing
                    .iter()
                    .all(|f| f.payload_start <= edit.span.start && edit.span.end <= f.payload_end);
            if !inside {
                return Err(SpliceError::OutOfBounds {
                    span: edit.span.clone(),
                });
            }
        }
        let prefixes = self.new_prefixes();
        // Every piece of output that differs from the input, by position.
        let mut pieces: Vec<(Range<usize>, Patch<'a>)> = prefixes
            .into_iter()
            .map(|(field, bytes)| (field.prefix_start..field.payload_start, Patch::Bytes(bytes)))
            .collect();
        pieces.extend(self.edits.into_iter().map(|e| (e.span, e.patch)));
        pieces.sort_by_key(|(span, _)| (span.start, span.end));
        for pair in pieces.windows(2) {
            if pair[0].0.end > pair[1].0.start {
                return Err(SpliceError::Overlap {
                    first: pair[0].0.clone(),
                    second: pair[1].0.clone(),
                });
            }
        }
        let mut pos = 0;
        for (span, patch) in pieces {
            out.write_all(&input[pos..span.start])?;
            match patch {
                Patch::Bytes(bytes) => out.write_all(&bytes)?,
                Patch::Stream { len, write } => {
                    let mut counter = CountingWriter {
                        inner: out,
                        written: 0,
                    };
                    write(&mut counter)?;
                    if counter.written != len {
                        return Err(SpliceError::PatchLength {
                            declared: len,
                            written: counter.written,
                        });
                    }
                }
            }
            pos = span.end;
        }
        out.write_all(&input[pos..])?;
        Ok(())
    }
}

struct CountingWriter<'w> {
    inner: &'w mut dyn Write,
    written: usize,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Encodes a field key followed by a length prefix, for a new length-delimited field.
pub fn encode_len_header(number: u32, len: usize, out: &mut Vec<u8>) {
    encode_varint((u64::from(number) << 3) | 2, out);
    encode_varint(len as u64, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_len_header(number, payload.len(), &mut out);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn no_edit_gives_input_back() {
        let data = len_field(7, &len_field(1, b"hello"));
        let mut out = Vec::new();
        Splice::default().write_to(&data, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn growing_a_field_past_127_bytes_widens_every_prefix() {
        let inner = len_field(9, &[1u8; 100]);
        let middle = len_field(5, &inner);
        let data = [vec![0x08, 0x00], len_field(7, &middle)].concat(); // explicit default kept
        let outer = fields(&data, 0).nth(1).unwrap().unwrap();
        let mid = fields(
            &data[outer.payload().unwrap()],
            outer.payload().unwrap().start,
        )
        .next()
        .unwrap()
        .unwrap();
        let raw = fields(&data[mid.payload().unwrap()], mid.payload().unwrap().start)
            .next()
            .unwrap()
            .unwrap();
        let mut splice = Splice::default();
        splice.replace(
            raw.payload().unwrap(),
            Patch::Bytes(vec![2u8; 200]),
            vec![
                LenField::of(&outer).unwrap(),
                LenField::of(&mid).unwrap(),
                LenField::of(&raw).unwrap(),
            ],
        );
        let expected_len = splice.output_len(data.len());
        let mut out = Vec::new();
        splice.write_to(&data, &mut out).unwrap();
        let expected = [
            vec![0x08, 0x00],
            len_field(7, &len_field(5, &len_field(9, &[2u8; 200]))),
        ]
        .concat();
        assert_eq!(out, expected);
        assert_eq!(expected_len, expected.len());
    }

    #[test]
    fn deleting_and_streaming_in_one_pass() {
        let a = len_field(1, b"aaaa");
        let b = len_field(2, b"bb");
        let data = len_field(3, &[a.clone(), b.clone()].concat());
        let outer = fields(&data, 0).next().unwrap().unwrap();
        let inner: Vec<Field> = fields(
            &data[outer.payload().unwrap()],
            outer.payload().unwrap().start,
        )
        .collect::<Result<_, _>>()
        .unwrap();
        let mut splice = Splice::default();
        let enclosing = vec![LenField::of(&outer).unwrap()];
        splice.replace(
            inner[0].span.clone(),
            Patch::Bytes(Vec::new()),
            enclosing.clone(),
        );
        splice.replace(
            inner[1].payload().unwrap(),
            Patch::Stream {
                len: 3,
                write: Box::new(|w| w.write_all(b"xyz")),
            },
            [enclosing, vec![LenField::of(&inner[1]).unwrap()]].concat(),
        );
        let mut out = Vec::new();
        splice.write_to(&data, &mut out).unwrap();
        assert_eq!(out, len_field(3, &len_field(2, b"xyz")));
    }

    #[test]
    fn a_stream_that_lies_about_its_length_is_an_error() {
        let data = len_field(1, b"abc");
        let field = fields(&data, 0).next().unwrap().unwrap();
        let mut splice = Splice::default();
        splice.replace(
            field.payload().unwrap(),
            Patch::Stream {
                len: 3,
                write: Box::new(|w| w.write_all(b"ab")),
            },
            vec![LenField::of(&field).unwrap()],
        );
        assert!(matches!(
            splice.write_to(&data, &mut Vec::new()),
            Err(SpliceError::PatchLength {
                declared: 3,
                written: 2
            })
        ));
    }

    #[test]
    fn truncated_and_garbage_input_are_errors_not_panics() {
        let data = len_field(1, b"abcdef");
        assert!(matches!(
            fields(&data[..4], 0).next(),
            Some(Err(WireError::Truncated { field: 1, .. }))
        ));
        assert!(matches!(
            fields(&[0xff; 12], 0).next(),
            Some(Err(WireError::Varint { .. }))
        ));
        assert!(matches!(
            fields(&[0x00], 0).next(),
            Some(Err(WireError::Key { .. }))
        ));
        assert!(matches!(
            fields(&[0x0b], 0).next(),
            Some(Err(WireError::Group { .. }))
        ));
    }
}
