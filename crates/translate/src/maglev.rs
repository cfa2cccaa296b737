//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table in which each
//! endpoint owns an almost equal share of slots, filled from per-endpoint permutations
//! so that adding or removing one endpoint moves only about 1/N of the keys. Hashes are
//! stable across processes, so every proxy replica maps a key to the same endpoint.

/// Slots in a table: a prime, about 100 times the endpoints of large Services for an
/// even spread (Envoy's default). It must not depend on the endpoint count, or a
/// change of count would move every key.
const TABLE_SIZE: usize = 65537;

/// A built table: the endpoint index for each slot.
#[derive(Debug, Clone)]
pub struct Maglev {
    slots: Box<[u32]>,
}

impl Maglev {
    /// Builds the table for endpoints identified by `ids` (stable names, such as their
    /// addresses); index `i` in the table stands for `ids[i]`.
    pub fn build<T: AsRef<[u8]>>(ids: &[T]) -> Option<Maglev> {
        let n = ids.len();
        if n == 0 {
            return None;
        }
        let m = TABLE_SIZE;
        let perms: Vec<(usize, usize)> = ids
            .iter()
            .map(|id| {
                let id = id.as_ref();
                let offset = (hash_bytes(id, 0x5bd1_e995) % m as u64) as usize;
                let skip = (hash_bytes(id, 0x9e37_79b9_7f4a_7c15) % (m as u64 - 1)) as usize + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0usize; n];
        let mut slots = vec![u32::MAX; m];
        let mut filled = 0;
        'fill: loop {
            for (i, &(offset, skip)) in perms.iter().enumerate() {
                // The endpoint's next preferred slot that is still free.
                let mut c = (offset + next[i] * skip) % m;
                while slots[c] != u32::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                slots[c] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        Some(Maglev {
            slots: slots.into_boxed_slice(),
        })
    }

    /// The endpoint index for a key's hash.
    pub fn lookup(&self, hash: u64) -> usize {
        self.slots[(hash % self.slots.len() as u64) as usize] as usize
    }

    /// The endpoint index `k` slots after the key's own: a stable fallback when the
    /// key's endpoint is out of rotation.
    pub fn lookup_nth(&self, hash: u64, k: usize) -> usize {
        let len = self.slots.len() as u64;
        self.slots[((hash % len + k as u64) % len) as usize] as usize
    }
}

/// A stable 64-bit hash of `bytes` (FNV-1a, finished by a SplitMix64 mix so that close
/// inputs spread over the whole range).
pub fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(range: std::ops::Range<u32>) -> Vec<String> {
        range
            .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250))
            .collect()
    }

    fn owners(t: &Maglev, ids: &[String], keys: u32) -> Vec<String> {
        (0..keys)
            .map(|k| ids[t.lookup(hash_bytes(&k.to_le_bytes(), 0))].clone())
            .collect()
    }

    #[test]
    fn every_endpoint_gets_an_even_share() {
        let ids = ids(0..10);
        let t = Maglev::build(&ids).expect("table");
        let mut counts = [0u32; 10];
        for s in t.slots.iter() {
            counts[*s as usize] += 1;
        }
        let m = t.slots.len() as f64;
        for c in counts {
            let share = c as f64 / m;
            assert!((0.099..=0.101).contains(&share), "share {share}");
        }
        // Keys spread evenly too (within 5% of a tenth each).
        let mut by_key = std::collections::HashMap::new();
        for o in owners(&t, &ids, 100_000) {
            *by_key.entry(o).or_insert(0u32) += 1;
        }
        for (id, c) in by_key {
            assert!((9_500..=10_500).contains(&c), "{id}: {c} of 100000 keys");
        }
    }

    #[test]
    fn adding_or_removing_one_endpoint_moves_about_one_nth_of_keys() {
        for n in [5u32, 20, 100] {
            let before_ids = ids(0..n);
            let after_ids = ids(0..n + 1);
            let before = owners(&Maglev::build(&before_ids).expect("t"), &before_ids, 50_000);
            let after = owners(&Maglev::build(&after_ids).expect("t"), &after_ids, 50_000);
            // Maglev trades a little disruption for balance: the moved share stays
            // within a point of the ideal 1/N.
            let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count() as f64;
            let ideal = 50_000.0 / (n + 1) as f64;
            assert!(
                moved >= ideal * 0.9 && moved <= ideal + 500.0,
                "n={n}: adding one moved {moved} keys, ideal {ideal}"
            );
            // Removing endpoint 0 moves its own keys and few others.
            let removed_ids = ids(1..n);
            let removed = owners(
                &Maglev::build(&removed_ids).expect("t"),
                &removed_ids,
                50_000,
            );
            let moved = before.iter().zip(&removed).filter(|(a, b)| a != b).count() as f64;
            let ideal = 50_000.0 / n as f64;
            assert!(
                moved >= ideal * 0.9 && moved <= ideal + 500.0,
                "n={n}: removing one moved {moved} keys, ideal {ideal}"
            );
        }
    }

    #[test]
    fn the_same_key_maps_to_the_same_endpoint_in_any_build() {
        let ids = ids(0..7);
        let a = Maglev::build(&ids).expect("t");
        let b = Maglev::build(&ids).expect("t");
        assert_eq!(a.slots, b.slots);
        assert!(Maglev::build::<String>(&[]).is_none());
    }
}
