//! Decoded archive chunks kept for the next read, within a byte budget.
//!
//! A dashboard asks for the same graphs again and again; a group's fallback
//! (rows the group never recorded) reads every member's chunks for each of
//! them, thousands of small blobs handed over from SQLite's thread one row at
//! a time and decoded. `rrdtool xport` reads its files from the page cache;
//! this is the same idea one step later: the decoded rows.
//!
//! Coherence: only the flusher writes chunks, and it removes each chunk it
//! wrote from here (under the flush gate, so no read is between its read of
//! the database and its insertion here). A series removed (its host or group
//! gone) is purged with the archives' memory, under the same lock a read
//! holds when it inserts, so a read that raced the removal inserts nothing.
//!
//! Eviction is two generations (an approximate LRU with O(1) work per
//! operation): entries go into the young map; when it holds half the budget,
//! the old map is dropped and the young one becomes old; a hit in the old map
//! moves the entry back to the young one. So at most the whole budget is
//! held, and what was read within the last half-budget of reads stays.

use metrolog_protocol::rrd::Row;
use std::collections::HashMap;
use std::sync::Arc;

/// (series id, archive index, chunk number).
pub type ChunkKey = (i64, u32, u32);

/// A chunk as the database holds it: its rows, or `None` when it holds no
/// row (never written), which a read needs to know as much as the rows.
pub type Cached = Option<Arc<Vec<Row>>>;

/// What each entry costs beside its rows (key, map slot, `Arc` header).
const ENTRY_OVERHEAD: usize = 64;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChunkCacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct ChunkCache {
    budget: usize,
    young: HashMap<ChunkKey, Cached>,
    young_bytes: usize,
    old: HashMap<ChunkKey, Cached>,
    old_bytes: usize,
    hits: u64,
    misses: u64,
}

fn cost(v: &Cached) -> usize {
    ENTRY_OVERHEAD
        + v.as_ref()
            .map_or(0, |r| std::mem::size_of_val::<[Row]>(r.as_slice()))
}

impl ChunkCache {
    /// A cache holding at most `budget` bytes (0: nothing is kept).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            young: HashMap::new(),
            young_bytes: 0,
            old: HashMap::new(),
            old_bytes: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// Changes the budget; what is held beyond it goes.
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
        if self.young_bytes + self.old_bytes > budget {
            self.clear();
        }
    }

    pub fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
        self.young_bytes = 0;
        self.old_bytes = 0;
    }

    /// The chunk, if held (`Some(None)`: held as empty).
    pub fn get(&mut self, key: ChunkKey) -> Option<Cached> {
        if let Some(v) = self.young.get(&key) {
            self.hits += 1;
            return Some(v.clone());
        }
        if let Some(v) = self.old.remove(&key) {
            self.hits += 1;
            self.old_bytes -= cost(&v);
            self.put(key, v.clone());
            return Some(v);
        }
        self.misses += 1;
        None
    }

    pub fn insert(&mut self, key: ChunkKey, value: Cached) {
        if let Some(v) = self.old.remove(&key) {
            self.old_bytes -= cost(&v);
        }
        self.put(key, value);
    }

    fn put(&mut self, key: ChunkKey, value: Cached) {
        let c = cost(&value);
        if c > self.budget / 2 {
            return;
        }
        if self.young_bytes + c > self.budget / 2 {
            self.old = std::mem::take(&mut self.young);
            self.old_bytes = self.young_bytes;
            self.young_bytes = 0;
        }
        self.young_bytes += c;
        if let Some(prev) = self.young.insert(key, value) {
            self.young_bytes -= cost(&prev);
        }
    }

    /// Forgets one chunk (the flusher wrote it).
    pub fn remove(&mut self, key: ChunkKey) {
        if let Some(v) = self.young.remove(&key) {
            self.young_bytes -= cost(&v);
        }
        if let Some(v) = self.old.remove(&key) {
            self.old_bytes -= cost(&v);
        }
    }

    /// Forgets every chunk of these series (they were removed).
    pub fn purge_series(&mut self, ids: &[i64]) {
        if ids.is_empty() || self.young.len() + self.old.len() == 0 {
            return;
        }
        let ids: std::collections::HashSet<i64> = ids.iter().copied().collect();
        self.young_bytes -= drop_series(&mut self.young, &ids);
        self.old_bytes -= drop_series(&mut self.old, &ids);
    }

    pub fn stats(&self) -> ChunkCacheStats {
        ChunkCacheStats {
            hits: self.hits,
            misses: self.misses,
            entries: (self.young.len() + self.old.len()) as u64,
            bytes: (self.young_bytes + self.old_bytes) as u64,
        }
    }
}

/// Removes the entries of `ids` from one generation; the bytes freed.
fn drop_series(map: &mut HashMap<ChunkKey, Cached>, ids: &std::collections::HashSet<i64>) -> usize {
    let mut freed = 0;
    map.retain(|k, v| {
        let keep = !ids.contains(&k.0);
        if !keep {
            freed += cost(v);
        }
        keep
    });
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: f64) -> Cached {
        Some(Arc::new(vec![
            Row {
                avg: v,
                min: v,
                max: v,
                last: v,
                count: 1,
            };
            16
        ]))
    }

    #[test]
    fn holds_what_fits_and_never_more_than_the_budget() {
        let one = cost(&rows(0.0));
        let mut c = ChunkCache::new(one * 10);
        for i in 0..100 {
            c.insert((i, 0, 0), rows(i as f64));
            assert!(c.stats().bytes as usize <= one * 10, "over budget at {i}");
        }
        // The newest are held, the oldest went.
        assert_eq!(c.get((99, 0, 0)).unwrap().unwrap()[0].avg, 99.0);
        assert!(c.get((0, 0, 0)).is_none());
    }

    #[test]
    fn a_read_entry_survives_the_generation_it_was_read_in() {
        let one = cost(&rows(0.0));
        let mut c = ChunkCache::new(one * 8); // 4 per generation
        c.insert((1, 0, 0), rows(1.0));
        for i in 10..14 {
            c.insert((i, 0, 0), rows(0.0)); // (1) is now old
        }
        assert!(c.get((1, 0, 0)).is_some()); // read: young again
        for i in 20..23 {
            c.insert((i, 0, 0), rows(0.0));
        }
        assert!(c.get((1, 0, 0)).is_some());
        assert!(c.get((10, 0, 0)).is_none());
    }

    #[test]
    fn empty_chunks_are_held_as_empty_and_removal_and_purge_forget() {
        let mut c = ChunkCache::new(1 << 20);
        c.insert((1, 0, 3), None);
        c.insert((1, 1, 0), rows(2.0));
        c.insert((2, 0, 0), rows(3.0));
        assert_eq!(c.get((1, 0, 3)), Some(None));
        c.remove((1, 0, 3));
        assert_eq!(c.get((1, 0, 3)), None);
        c.purge_series(&[1]);
        assert_eq!(c.get((1, 1, 0)), None);
        assert!(c.get((2, 0, 0)).is_some());
        let s = c.stats();
        assert_eq!(s.entries, 1);
        assert_eq!(s.bytes as usize, cost(&rows(0.0)));
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let mut c = ChunkCache::new(0);
        c.insert((1, 0, 0), rows(1.0));
        assert_eq!(c.get((1, 0, 0)), None);
        assert_eq!(c.stats().entries, 0);
    }
}
