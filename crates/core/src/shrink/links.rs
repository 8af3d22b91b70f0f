//! Groups whose removal units go together although their channels differ: in grouped-query
//! attention a query group's unit is the query heads of one KV head, the K/V group's unit that
//! KV head. The walk records such links ([`Builder::unit_links`]); finishing makes each linked
//! set one group, blocked when the sets' unit counts differ.

use std::collections::BTreeMap;

use super::analyze::Builder;

impl Builder<'_> {
    /// Every root group and the root that stands for its linked set (the one made first),
    /// with the set's facts gathered there. Also blocks a root whose heads do not divide its
    /// channel period.
    pub(crate) fn link_units(&mut self) -> BTreeMap<usize, usize> {
        let roots: Vec<usize> = (0..self.raw.len()).filter(|&g| self.find(g) == g).collect();
        for &r in &roots {
            let raw = &mut self.raw[r];
            if raw.period % raw.block != 0 {
                raw.blocked
                    .push("its heads do not line up with its channel groups".into());
                raw.block = 1;
            }
        }
        let mut class: BTreeMap<usize, usize> = roots.iter().map(|&r| (r, r)).collect();
        let rep = |class: &BTreeMap<usize, usize>, mut r: usize| {
            while class[&r] != r {
                r = class[&r];
            }
            r
        };
        for (a, b) in self.unit_links.clone() {
            let (a, b) = (rep(&class, self.find(a)), rep(&class, self.find(b)));
            if a == b {
                continue;
            }
            let key = |g: usize| (self.raw[g].first_node, g);
            let (keep, join) = if key(a) <= key(b) { (a, b) } else { (b, a) };
            class.insert(join, keep);
            let joined = std::mem::take(&mut self.raw[join].blocked);
            let units = |g: usize| self.raw[g].period / self.raw[g].block;
            let mismatch = units(keep) != units(join);
            let (producers, consumers, members, not_zero) = {
                let raw = &self.raw[join];
                (
                    raw.producers.clone(),
                    raw.consumers.clone(),
                    raw.members.clone(),
                    raw.not_zero.clone(),
                )
            };
            let raw = &mut self.raw[keep];
            raw.blocked.extend(joined);
            if mismatch {
                raw.blocked
                    .push("its query heads do not divide among its key/value heads".into());
            }
            raw.producers.extend(producers);
            raw.consumers.extend(consumers);
            raw.members.extend(members);
            raw.not_zero.extend(not_zero);
        }
        roots.iter().map(|&r| (r, rep(&class, r))).collect()
    }
}
