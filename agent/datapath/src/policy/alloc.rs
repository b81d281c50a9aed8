//! Stable number allocation (identities, CIDR identities, endpoint ids,
//! policy ids).
//!
//! A key keeps its number for as long as it exists, so a recompile after an
//! unrelated change rewrites no map entry. A freed number is not handed out
//! again in the same compile, nor soon after: allocation continues from
//! where the last one stopped and wraps around the range. Reusing a number
//! at once would let, between two map writes of one diff, an old address
//! (still mapped to the number) match the new owner's policy entries.

use std::collections::{BTreeMap, BTreeSet};

/// Numbers given to keys of type `K` in `min..=max`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocator<K: Ord> {
    assigned: BTreeMap<K, u32>,
    /// Where the next search for a free number starts.
    next: u32,
    min: u32,
    max: u32,
}

/// Every number of the range is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exhausted {
    pub capacity: u64,
}

impl<K: Ord + Clone> Allocator<K> {
    /// An empty allocator over `min..=max` (`min <= max`).
    pub fn new(min: u32, max: u32) -> Self {
        Self {
            assigned: BTreeMap::new(),
            next: min,
            min,
            max,
        }
    }

    /// An allocation over `min..=max` (`min <= max`) holding the pairs of
    /// `assigned` that are consistent: a pair is dropped when its number is
    /// outside the range or already another key's, or its key already has
    /// a number (the first pair wins). For numbers recovered from maps an
    /// earlier agent wrote, so a restart keeps them. Allocation continues
    /// after the highest number kept.
    pub fn seeded(min: u32, max: u32, assigned: impl IntoIterator<Item = (K, u32)>) -> Self {
        let mut out = Self::new(min, max);
        let mut taken = BTreeSet::new();
        for (key, n) in assigned {
            if !(min..=max).contains(&n) || taken.contains(&n) || out.assigned.contains_key(&key) {
                continue;
            }
            taken.insert(n);
            out.assigned.insert(key, n);
        }
        if let Some(&high) = taken.last() {
            out.next = if high == max { min } else { high + 1 };
        }
        out
    }

    /// The number of `key`, if it has one.
    pub fn get(&self, key: &K) -> Option<u32> {
        self.assigned.get(key).copied()
    }

    /// Every key and its number.
    pub fn iter(&self) -> impl Iterator<Item = (&K, u32)> {
        self.assigned.iter().map(|(k, v)| (k, *v))
    }

    /// A new allocation holding exactly `keys`: keys `self` knows keep their
    /// number; the others get numbers neither in use nor just freed.
    pub fn reallocate<'k>(&self, keys: impl IntoIterator<Item = &'k K>) -> Result<Self, Exhausted>
    where
        K: 'k,
    {
        let keys: BTreeSet<&K> = keys.into_iter().collect();
        let mut out = Self {
            assigned: BTreeMap::new(),
            next: self.next,
            min: self.min,
            max: self.max,
        };
        // Numbers of the previous allocation stay taken during this compile,
        // whether kept or freed (see the module doc).
        let mut taken: BTreeSet<u32> = self.assigned.values().copied().collect();
        let mut fresh = Vec::new();
        for key in keys {
            match self.assigned.get(key) {
                Some(n) => {
                    out.assigned.insert(key.clone(), *n);
                }
                None => fresh.push(key),
            }
        }
        let capacity = u64::from(self.max - self.min) + 1;
        for key in fresh {
            let n = out.find_free(&taken).ok_or(Exhausted { capacity })?;
            taken.insert(n);
            out.assigned.insert(key.clone(), n);
            out.next = if n == out.max { out.min } else { n + 1 };
        }
        Ok(out)
    }

    fn find_free(&self, taken: &BTreeSet<u32>) -> Option<u32> {
        let from_next = taken.range(self.next..=self.max);
        if let Some(n) = first_gap(self.next, self.max, from_next) {
            return Some(n);
        }
        first_gap(self.min, self.max, taken.range(self.min..=self.max))
    }
}

/// The smallest number in `lo..=hi` not in the sorted `used`.
fn first_gap<'a>(lo: u32, hi: u32, used: impl Iterator<Item = &'a u32>) -> Option<u32> {
    let mut candidate = lo;
    for &u in used {
        if u > candidate {
            break;
        }
        if u == candidate {
            if candidate == hi {
                return None;
            }
            candidate += 1;
        }
    }
    (candidate <= hi).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_keys_keep_numbers_and_freed_numbers_are_not_reused_at_once() {
        let a = Allocator::<&str>::new(10, 13);
        let a = a.reallocate(&["x", "y"]).expect("room");
        assert_eq!((a.get(&"x"), a.get(&"y")), (Some(10), Some(11)));
        // y goes, z comes: z must not get 11.
        let b = a.reallocate(&["x", "z"]).expect("room");
        assert_eq!(
            (b.get(&"x"), b.get(&"z"), b.get(&"y")),
            (Some(10), Some(12), None)
        );
        // Wraps around and finally reuses 11 once the range end is reached.
        let c = b.reallocate(&["x", "z", "w"]).expect("room");
        assert_eq!(c.get(&"w"), Some(13));
        let d = c.reallocate(&["x", "z", "w", "v"]).expect("room");
        assert_eq!(d.get(&"v"), Some(11));
        assert_eq!(
            d.reallocate(&["x", "z", "w", "v", "u"]),
            Err(Exhausted { capacity: 4 })
        );
    }

    #[test]
    fn seeded_keeps_consistent_pairs_and_continues_after_them() {
        type Pairs = Vec<(&'static str, u32)>;
        let cases: [(&str, Pairs, Pairs); 4] = [
            ("empty", vec![], vec![]),
            (
                "kept",
                vec![("x", 12), ("y", 10)],
                vec![("x", 12), ("y", 10)],
            ),
            (
                "a number claimed twice: the first wins",
                vec![("x", 11), ("y", 11)],
                vec![("x", 11)],
            ),
            (
                "a key twice, out of range",
                vec![("x", 11), ("x", 12), ("y", 99), ("z", 9)],
                vec![("x", 11)],
            ),
        ];
        for (name, pairs, want) in cases {
            let a = Allocator::seeded(10, 13, pairs);
            let got: Vec<(&str, u32)> = a.iter().map(|(k, n)| (*k, n)).collect();
            let mut want = want;
            want.sort();
            assert_eq!(got, want, "{name}");
        }
        // Fresh keys continue after the highest kept number.
        let a = Allocator::seeded(10, 13, [("x", 11)]);
        let b = a.reallocate(&["x", "w"]).expect("room");
        assert_eq!((b.get(&"x"), b.get(&"w")), (Some(11), Some(12)));
        let c = Allocator::seeded(10, 13, [("x", 13)]);
        let d = c.reallocate(&["x", "w"]).expect("room");
        assert_eq!(d.get(&"w"), Some(10), "wraps after the range end");
    }
}
