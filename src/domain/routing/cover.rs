//! The split of a delivery over several locations shipping whole lines: line bitmasks,
//! location classes, and the exact (up to 3 shipments) or greedy set cover.

use std::cmp::Ordering;

use super::{PROBE_BUDGET, TABLE_MAX_LINES};

// ---- Line bitmasks: `words` u64 per mask, bit l = line l. ----

pub(super) fn full_mask(n: usize, words: usize) -> Vec<u64> {
    let mut m = vec![0u64; words];
    for l in 0..n {
        m[l / 64] |= 1 << (l % 64);
    }
    m
}

pub(super) fn has_bit(mask: &[u64], l: usize) -> bool {
    mask.get(l / 64).is_some_and(|w| (w >> (l % 64)) & 1 == 1)
}

pub(super) fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

pub(super) fn is_empty(a: &[u64]) -> bool {
    a.iter().all(|&w| w == 0)
}

/// `out = a & !b`.
pub(super) fn and_not(a: &[u64], b: &[u64], out: &mut [u64]) {
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x & !y;
    }
}

pub(super) fn bits(mask: &[u64]) -> impl Iterator<Item = usize> + '_ {
    mask.iter().enumerate().flat_map(|(w, &word)| {
        let mut x = word;
        std::iter::from_fn(move || {
            (x != 0).then(|| {
                let b = x.trailing_zeros() as usize;
                x &= x - 1;
                w * 64 + b
            })
        })
    })
}

// ---- Split search ----

/// Non-dominated coverage classes, nearest first, and what the search needs to know about them.
pub(super) struct Classes {
    pub(super) words: usize,
    /// Row (index into the distance-sorted rows) representing each class.
    pub(super) rows: Vec<usize>,
    pub(super) dist: Vec<f64>,
    pub(super) masks: Vec<u64>,
    /// Per line, the classes serving it, nearest first.
    pub(super) serving: Vec<Vec<u32>>,
    /// For up to [`TABLE_MAX_LINES`] lines: per set of lines, the nearest class covering it.
    pub(super) table: Option<Vec<u32>>,
}

pub(super) const NONE: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub(super) struct Cover {
    /// Class indices, ascending (= nearest first).
    pub(super) members: Vec<u32>,
    pub(super) total: f64,
}

impl Cover {
    pub(super) fn new(mut members: Vec<u32>, dist: &[f64]) -> Self {
        members.sort_unstable();
        members.dedup();
        let total = members.iter().map(|&c| dist[c as usize]).sum();
        Cover { members, total }
    }

    /// Fewer shipments, then less total distance, then nearer members (for determinism).
    pub(super) fn rank_cmp(&self, other: &Cover) -> Ordering {
        self.members
            .len()
            .cmp(&other.members.len())
            .then_with(|| self.total.total_cmp(&other.total))
            .then_with(|| self.members.cmp(&other.members))
    }
}

impl Classes {
    pub(super) fn mask(&self, c: u32) -> &[u64] {
        let c = c as usize;
        &self.masks[c * self.words..(c + 1) * self.words]
    }

    /// The line of `need` served by the fewest classes.
    pub(super) fn rarest(&self, need: &[u64]) -> Option<usize> {
        bits(need).min_by_key(|&l| (self.serving[l].len(), l))
    }

    /// The nearest class whose lines include all of `need` (non-empty).
    pub(super) fn nearest_superset(&self, need: &[u64], probes: &mut u64) -> Option<u32> {
        if let Some(table) = &self.table {
            let c = table[need[0] as usize];
            return (c != NONE).then_some(c);
        }
        let line = self.rarest(need)?;
        self.serving[line].iter().copied().find(|&c| {
            *probes += 1;
            is_subset(need, self.mask(c))
        })
    }

    /// Most uncovered lines first, then nearest; None if some line cannot be covered.
    pub(super) fn greedy(&self, full: &[u64]) -> Option<Cover> {
        let mut uncovered = full.to_vec();
        let mut members = Vec::new();
        while !is_empty(&uncovered) {
            let (best, gain) = (0..self.rows.len() as u32)
                .map(|c| {
                    let gain: u32 = self
                        .mask(c)
                        .iter()
                        .zip(&uncovered)
                        .map(|(m, u)| (m & u).count_ones())
                        .sum();
                    (c, gain)
                })
                // max_by_key keeps the last maximum; reverse so the nearest wins ties.
                .rev()
                .max_by_key(|&(_, gain)| gain)?;
            if gain == 0 {
                return None;
            }
            members.push(best);
            for (u, m) in uncovered.iter_mut().zip(self.mask(best)) {
                *u &= !m;
            }
        }
        Some(Cover::new(members, &self.dist))
    }
}

/// Chooses the rows of a split delivery: Ok(rows nearest first), or Err(mask of the lines no
/// usable row can serve whole).
pub(super) fn split(
    dists: &[f64],
    masks: &[u64],
    usable_rows: &[usize],
    n: usize,
    words: usize,
) -> Result<Vec<usize>, Vec<u64>> {
    let full = full_mask(n, words);
    let row_mask = |i: usize| &masks[i * words..(i + 1) * words];

    // Classes: rows are nearest first, so a row whose lines are a subset of an earlier kept
    // row's (including the same lines) is dominated.
    let mut classes = Classes {
        words,
        rows: Vec::new(),
        dist: Vec::new(),
        masks: Vec::new(),
        serving: vec![Vec::new(); n],
        table: None,
    };
    let mut union = vec![0u64; words];
    for &i in usable_rows {
        let m = row_mask(i);
        if is_empty(m) || classes.masks.chunks_exact(words).any(|k| is_subset(m, k)) {
            continue;
        }
        let c = classes.rows.len() as u32;
        classes.rows.push(i);
        classes.dist.push(dists[i]);
        classes.masks.extend_from_slice(m);
        for l in bits(m) {
            classes.serving[l].push(c);
        }
        for (u, w) in union.iter_mut().zip(m) {
            *u |= w;
        }
    }
    if !is_subset(&full, &union) {
        let mut uncovered = vec![0u64; words];
        and_not(&full, &union, &mut uncovered);
        return Err(uncovered);
    }
    if n <= TABLE_MAX_LINES {
        let size = 1usize << n;
        let mut table = vec![NONE; size];
        for c in 0..classes.rows.len() as u32 {
            let slot = &mut table[classes.mask(c)[0] as usize];
            *slot = (*slot).min(c);
        }
        // Superset-min over the subset lattice: table[m] = min over masks containing m.
        for bit in 0..n {
            for m in 0..size {
                if m & (1 << bit) == 0 {
                    table[m] = table[m].min(table[m | (1 << bit)]);
                }
            }
        }
        classes.table = Some(table);
    }

    let Some(mut best) = classes.greedy(&full) else {
        // Unreachable: the union covers every line, so greedy always progresses.
        return Err(full);
    };
    let nearest = classes.dist.first().copied().unwrap_or(0.0);
    let mut probes = 0u64;
    let consider = |best: &mut Cover, members: Vec<u32>| {
        let cover = Cover::new(members, &classes.dist);
        if cover.rank_cmp(best) == Ordering::Less {
            *best = cover;
        }
    };
    let Some(first) = classes.rarest(&full) else {
        return Ok(Vec::new());
    };
    let mut need1 = vec![0u64; words];
    let mut need2 = vec![0u64; words];

    // Covers of 2: a serves the rarest line, the partner is the nearest class with the rest.
    for &a in &classes.serving[first] {
        let da = classes.dist[a as usize];
        if best.members.len() == 2 && da + nearest > best.total {
            break;
        }
        and_not(&full, classes.mask(a), &mut need1);
        if let Some(c) = classes.nearest_superset(&need1, &mut probes) {
            consider(&mut best, vec![a, c]);
        }
    }

    // Covers of 3, only if there is none of 2.
    if best.members.len() > 2 {
        'outer: for &a in &classes.serving[first] {
            let da = classes.dist[a as usize];
            if best.members.len() == 3 && da + 2.0 * nearest > best.total {
                break;
            }
            and_not(&full, classes.mask(a), &mut need1);
            let Some(second) = classes.rarest(&need1) else {
                continue;
            };
            for &b in &classes.serving[second] {
                let db = classes.dist[b as usize];
                if best.members.len() == 3 && da + db + nearest > best.total {
                    break;
                }
                and_not(&need1, classes.mask(b), &mut need2);
                if is_empty(&need2) {
                    continue;
                }
                if probes > PROBE_BUDGET {
                    break 'outer;
                }
                if let Some(c) = classes.nearest_superset(&need2, &mut probes) {
                    consider(&mut best, vec![a, b, c]);
                }
            }
        }
    }

    Ok(best
        .members
        .iter()
        .map(|&c| classes.rows[c as usize])
        .collect())
}
