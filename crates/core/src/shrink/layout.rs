//! How the channel axis of one activation tensor is made of channel groups: a list of segments,
//! each a range of one group's channels (or of channels that belong to no group), in order.
//! Concat joins segment lists, Split and Slice cut them, Flatten spreads each channel over
//! `s` columns.

/// A run of consecutive positions on a tensor's channel axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seg {
    /// The channel group (raw id, before merging), or `None` for channels of no group.
    pub group: Option<usize>,
    /// First channel of the group in this run.
    pub start: usize,
    /// Number of channels.
    pub len: usize,
}

/// Whether the channel axis was flattened together with the spatial axes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flat {
    /// Not flattened: one position per channel.
    No,
    /// Flattened; the columns per channel are learnt from the consumer's weight.
    Unknown,
    /// Flattened, with this many columns per channel.
    Cols(usize),
}

/// Channels that sit on an attention head axis: each position of the axis holds `per`
/// consecutive channels (one head), the head's own positions on other axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// Channels per position (the head size).
    pub per: usize,
    /// The head axis is merged with the batch axis before it (position `b * heads + h`).
    pub folded: bool,
    /// Each head is repeated this many times on the axis (grouped-query attention's K and V:
    /// position `p` holds head `p / repeat`).
    pub repeat: usize,
    /// The axis after the head axis repeats each head this many times (an `Expand` before the
    /// Reshape that makes the repeats heads).
    pub expanded: Option<usize>,
}

impl Head {
    /// Heads of `per` channels, once each.
    pub fn new(per: usize) -> Head {
        Head {
            per,
            folded: false,
            repeat: 1,
            expanded: None,
        }
    }
}

/// The channel layout of one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The segments, in axis order.
    pub segs: Vec<Seg>,
    /// The tensor's rank, when known.
    pub rank: Option<usize>,
    /// The channel axis counted from the end (`-3` for NCHW, `-1` for `[N, F]`).
    pub neg: i64,
    /// Whether the channel axis was flattened.
    pub flat: Flat,
    /// The first op on the way that does not map 0 to 0 (`label (op)`), if any: a channel of
    /// this tensor may then be nonzero though its producers' weights are zero.
    pub nonzero: Option<String>,
    /// Set when the channel axis holds heads rather than single channels.
    pub head: Option<Head>,
}

/// Which group channel a position of a weight's axis carries: (raw group, channel).
pub(crate) type Owner = Option<(usize, usize)>;

impl Layout {
    /// The whole of a new group of `len` channels, on axis `neg` of a tensor of rank `rank`.
    pub fn whole(group: usize, len: usize, rank: Option<usize>, neg: i64) -> Layout {
        Layout {
            segs: vec![Seg {
                group: Some(group),
                start: 0,
                len,
            }],
            rank,
            neg,
            flat: Flat::No,
            nonzero: None,
            head: None,
        }
    }

    /// Number of channels.
    pub fn total(&self) -> usize {
        self.segs.iter().map(|s| s.len).sum()
    }

    /// The groups of the layout (raw ids, possibly repeated).
    pub fn groups(&self) -> impl Iterator<Item = usize> + '_ {
        self.segs.iter().filter_map(|s| s.group)
    }

    /// The channel axis counted from the start, when the rank is known.
    pub fn axis(&self) -> Option<usize> {
        let rank = self.rank? as i64;
        usize::try_from(rank + self.neg).ok()
    }

    /// The channels at positions `from..to`.
    pub fn slice(&self, from: usize, to: usize) -> Layout {
        let mut segs = Vec::new();
        let mut at = 0;
        for seg in &self.segs {
            let (lo, hi) = (from.max(at), to.min(at + seg.len));
            if lo < hi {
                segs.push(Seg {
                    group: seg.group,
                    start: seg.start + (lo - at),
                    len: hi - lo,
                });
            }
            at += seg.len;
        }
        Layout {
            segs,
            ..self.clone()
        }
    }

    /// The owner of each head's first channel, one per head (per position of a head axis).
    pub fn head_owners(&self, per: usize) -> Vec<Owner> {
        self.owners(1).into_iter().step_by(per.max(1)).collect()
    }

    /// The owner of every position, each channel spread over `cols` positions.
    pub fn owners(&self, cols: usize) -> Vec<Owner> {
        let mut out = Vec::with_capacity(self.total() * cols);
        for seg in &self.segs {
            for c in seg.start..seg.start + seg.len {
                let owner = seg.group.map(|g| (g, c));
                out.extend(std::iter::repeat_n(owner, cols));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slicing_a_concatenation_keeps_each_groups_offsets() {
        let mut joined = Layout::whole(0, 4, Some(4), -3);
        joined.segs.push(Seg {
            group: Some(1),
            start: 0,
            len: 3,
        });
        let cut = joined.slice(2, 6);
        assert_eq!(
            cut.segs,
            vec![
                Seg {
                    group: Some(0),
                    start: 2,
                    len: 2
                },
                Seg {
                    group: Some(1),
                    start: 0,
                    len: 2
                }
            ]
        );
        assert_eq!(
            cut.owners(2),
            vec![
                Some((0, 2)),
                Some((0, 2)),
                Some((0, 3)),
                Some((0, 3)),
                Some((1, 0)),
                Some((1, 0)),
                Some((1, 1)),
                Some((1, 1))
            ]
        );
        assert_eq!(joined.axis(), Some(1));
    }
}
