//! Split search when some line must be split in quantity: no usable location holds the whole
//! quantity of it, so only a set of locations whose stock adds up can serve it.
//!
//! Every line becomes a *need* in units. A line some usable location holds whole is still
//! shipped whole from one location: its need is 1 and a location gives 1 if it holds the
//! whole quantity, else 0. A line nobody holds whole needs its quantity, and a location gives
//! `min(available, quantity)`. A set of locations is a cover when, per line, what its members
//! give adds up to the need. The best cover has the fewest members, then the least total
//! distance (ties: nearer members).
//!
//! Bounds, in the order they run:
//!
//! 1. Greedy (all usable locations that give anything): repeatedly the location giving the
//!    most still-missing units (a whole line counts its quantity), then the nearest. Then a
//!    local improvement until nothing changes (at most [`IMPROVE_ROUNDS`] rounds): drop a member
//!    the others cover without; replace two members by one location; replace a member by a
//!    nearer location. The answer is never worse than this cover.
//! 2. Exact search for covers of up to [`EXACT_MAX_SHIPMENTS`] locations over the locations left
//!    after pruning: a location that at least [`EXACT_MAX_SHIPMENTS`] nearer ones each give at
//!    least as much of every line (so 3 identical stores are kept, the 4th is not) never needs
//!    to be in a cover of that size. Branching is on the line with the fewest givers (every
//!    cover contains one of them), givers nearest first; a giver tried is excluded from its
//!    later siblings (so each set is visited once); a branch stops when even the nearest
//!    location for every remaining slot cannot beat the best total, or when the remaining slots
//!    cannot add up to a line's need; the last member is the nearest location giving all that
//!    is missing. Every candidate looked at counts as a probe; at [`PROBE_BUDGET`] probes the
//!    best cover found so far is kept. With at most 100 locations left after pruning the search
//!    needs at most `3 x 100 + 2 x 100^2 + 100^3 < 2^20` probes, so it is exact: whenever the
//!    best cover has at most 3 locations, it is the answer.

use std::cmp::Ordering;

/// Largest cover searched exactly.
pub(super) const EXACT_MAX_SHIPMENTS: usize = 3;
/// Candidates looked at by the exact search before it keeps the best cover found so far.
pub(super) const PROBE_BUDGET: u64 = 1 << 20;
/// Rounds of local improvement after the greedy cover; each round strictly improves it.
pub(super) const IMPROVE_ROUNDS: usize = 64;

/// A split-in-quantity instance. Candidates are usable locations, nearest first.
pub(super) struct Problem {
    /// Lines of the order.
    n: usize,
    /// Per line, the quantity asked.
    quantity: Vec<i64>,
    /// Per line, whether it is shipped whole (some usable location holds all of it).
    whole: Vec<bool>,
    /// Per line: 1 for a whole line, its quantity for a line split in quantity.
    need: Vec<i64>,
    /// Per candidate, its distance (ascending).
    dist: Vec<f64>,
    /// Per candidate x line, what it gives (see the module docs), `n` per candidate.
    gives: Vec<i64>,
}

impl Problem {
    /// `available`: per candidate x line, what the candidate has (`quantity.len()` per
    /// candidate). Quantities are > 0.
    pub(super) fn new(quantity: Vec<i64>, dist: Vec<f64>, available: &[i64]) -> Problem {
        let n = quantity.len();
        let whole: Vec<bool> = (0..n)
            .map(|l| {
                available
                    .chunks_exact(n.max(1))
                    .any(|a| a[l] >= quantity[l])
            })
            .collect();
        let need = (0..n)
            .map(|l| if whole[l] { 1 } else { quantity[l] })
            .collect();
        let gives = available
            .chunks_exact(n.max(1))
            .flat_map(|a| {
                (0..n).map(|l| {
                    if whole[l] {
                        i64::from(a[l] >= quantity[l])
                    } else {
                        a[l].clamp(0, quantity[l])
                    }
                })
            })
            .collect();
        Problem {
            n,
            quantity,
            whole,
            need,
            dist,
            gives,
        }
    }

    /// Whether some line must be split in quantity.
    pub(super) fn splits(&self) -> bool {
        self.whole.iter().any(|w| !w)
    }

    /// Whether candidate `c` gives anything at all.
    pub(super) fn gives_any(&self, c: usize) -> bool {
        self.gives(c).iter().any(|&g| g > 0)
    }

    /// Greedy weight of a unit of line `l`: a whole line counts its quantity.
    fn weight(&self, l: usize) -> i64 {
        if self.whole[l] {
            self.quantity[l]
        } else {
            1
        }
    }

    fn gives(&self, c: usize) -> &[i64] {
        &self.gives[c * self.n..(c + 1) * self.n]
    }

    fn count(&self) -> usize {
        self.dist.len()
    }

    /// What `members` leave missing, per line.
    fn missing(&self, members: impl Iterator<Item = usize>) -> Vec<i64> {
        let mut left = self.need.clone();
        for c in members {
            take(&mut left, self.gives(c));
        }
        left
    }

    fn total(&self, members: &[usize]) -> f64 {
        members.iter().map(|&c| self.dist[c]).sum()
    }

    /// Fewer members, then less total distance, then nearer members.
    fn cmp(&self, a: &[usize], b: &[usize]) -> Ordering {
        a.len()
            .cmp(&b.len())
            .then_with(|| self.total(a).total_cmp(&self.total(b)))
            .then_with(|| sorted(a).cmp(&sorted(b)))
    }
}

fn sorted(a: &[usize]) -> Vec<usize> {
    let mut v = a.to_vec();
    v.sort_unstable();
    v
}

fn take(left: &mut [i64], gives: &[i64]) {
    for (l, g) in left.iter_mut().zip(gives) {
        *l = (*l - g).max(0);
    }
}

fn covers(left: &[i64], gives: &[i64]) -> bool {
    left.iter().zip(gives).all(|(l, g)| g >= l)
}

fn done(left: &[i64]) -> bool {
    left.iter().all(|&l| l == 0)
}

/// Lines the candidates together cannot serve (empty when a cover exists).
pub(super) fn short_lines(p: &Problem) -> Vec<usize> {
    (0..p.n)
        .filter(|&l| {
            let sum = (0..p.count()).fold(0i64, |s, c| s.saturating_add(p.gives(c)[l]));
            sum < p.need[l]
        })
        .collect()
}

/// The best cover found (candidate indices, ascending = nearest first), or None if there is none.
pub(super) fn search(p: &Problem) -> Option<Vec<usize>> {
    if !short_lines(p).is_empty() {
        return None;
    }
    let mut best = improve(p, greedy(p)?);
    exact(p, &mut best);
    best.sort_unstable();
    Some(best)
}

/// Most missing units (weighted) first, then nearest.
pub(super) fn greedy(p: &Problem) -> Option<Vec<usize>> {
    let mut left = p.need.clone();
    let mut used = vec![false; p.count()];
    let mut members = Vec::new();
    while !done(&left) {
        let mut pick: Option<(usize, i64)> = None;
        for c in (0..p.count()).filter(|&c| !used[c]) {
            let score = p
                .gives(c)
                .iter()
                .zip(&left)
                .enumerate()
                .fold(0i64, |s, (l, (g, left))| {
                    s.saturating_add((*g).min(*left).saturating_mul(p.weight(l)))
                });
            // Strictly more: the nearest wins ties (candidates are nearest first).
            if score > pick.map_or(0, |(_, s)| s) {
                pick = Some((c, score));
            }
        }
        let (c, _) = pick?;
        used[c] = true;
        members.push(c);
        take(&mut left, p.gives(c));
    }
    Some(members)
}

/// Local improvement of a cover; every accepted step makes it strictly better.
fn improve(p: &Problem, mut s: Vec<usize>) -> Vec<usize> {
    for _ in 0..IMPROVE_ROUNDS {
        if let Some(better) = drop_one(p, &s)
            .or_else(|| merge_two(p, &s))
            .or_else(|| swap_nearer(p, &s))
        {
            debug_assert!(p.cmp(&better, &s) == Ordering::Less);
            s = better;
        } else {
            break;
        }
    }
    s
}

/// Without its farthest member the others may still cover.
fn drop_one(p: &Problem, s: &[usize]) -> Option<Vec<usize>> {
    let mut by_dist = s.to_vec();
    by_dist.sort_unstable_by(|a, b| b.cmp(a));
    by_dist.into_iter().find_map(|m| {
        let rest: Vec<usize> = s.iter().copied().filter(|&c| c != m).collect();
        done(&p.missing(rest.iter().copied())).then_some(rest)
    })
}

/// Two members replaced by the nearest one location giving what they gave.
fn merge_two(p: &Problem, s: &[usize]) -> Option<Vec<usize>> {
    for i in 0..s.len() {
        for j in i + 1..s.len() {
            let rest: Vec<usize> = s
                .iter()
                .copied()
                .filter(|&c| c != s[i] && c != s[j])
                .collect();
            let left = p.missing(rest.iter().copied());
            if let Some(c) = (0..p.count()).find(|&c| !s.contains(&c) && covers(&left, p.gives(c)))
            {
                let mut out = rest;
                out.push(c);
                return Some(out);
            }
        }
    }
    None
}

/// A member (farthest first) replaced by the nearest nearer location giving what it gave.
fn swap_nearer(p: &Problem, s: &[usize]) -> Option<Vec<usize>> {
    let mut by_dist = s.to_vec();
    by_dist.sort_unstable_by(|a, b| b.cmp(a));
    for m in by_dist {
        let rest: Vec<usize> = s.iter().copied().filter(|&c| c != m).collect();
        let left = p.missing(rest.iter().copied());
        // Candidates are nearest first: only indices below m are nearer (or tie before it).
        if let Some(c) = (0..m).find(|&c| !s.contains(&c) && covers(&left, p.gives(c))) {
            let mut out = rest;
            out.push(c);
            return Some(out);
        }
    }
    None
}

/// Replaces `best` by the best cover of up to [`EXACT_MAX_SHIPMENTS`] locations, if better.
fn exact(p: &Problem, best: &mut Vec<usize>) {
    let keep = prune(p);
    let mut search = Exact {
        p,
        // Per line, the kept candidates giving to it, nearest first.
        givers: (0..p.n)
            .map(|l| {
                keep.iter()
                    .copied()
                    .filter(|&c| p.gives(c)[l] > 0)
                    .collect()
            })
            .collect(),
        most: (0..p.n)
            .map(|l| keep.iter().map(|&c| p.gives(c)[l]).max().unwrap_or(0))
            .collect(),
        nearest: keep.first().map_or(0.0, |&c| p.dist[c]),
        used: vec![false; p.count()],
        members: Vec::new(),
        probes: 0,
        best: std::mem::take(best),
    };
    // Smallest size first: the first size with a cover holds the fewest shipments, and its
    // search also finds the least total for it. Sizes above the best's cannot beat it.
    for k in 1..=EXACT_MAX_SHIPMENTS {
        if k > search.best.len() {
            break;
        }
        search.run(k);
    }
    *best = search.best;
}

/// Candidates that at least [`EXACT_MAX_SHIPMENTS`] earlier kept candidates do not dominate.
fn prune(p: &Problem) -> Vec<usize> {
    let mut keep: Vec<usize> = Vec::new();
    for c in 0..p.count() {
        let g = p.gives(c);
        if g.iter().all(|&x| x == 0) {
            continue;
        }
        let dominators = keep
            .iter()
            .filter(|&&k| p.gives(k).iter().zip(g).all(|(a, b)| a >= b))
            .take(EXACT_MAX_SHIPMENTS)
            .count();
        if dominators < EXACT_MAX_SHIPMENTS {
            keep.push(c);
        }
    }
    keep
}

struct Exact<'p> {
    p: &'p Problem,
    givers: Vec<Vec<usize>>,
    /// Per line, the most one kept candidate gives.
    most: Vec<i64>,
    nearest: f64,
    used: Vec<bool>,
    members: Vec<usize>,
    probes: u64,
    best: Vec<usize>,
}

impl Exact<'_> {
    fn run(&mut self, k: usize) {
        let left = self.p.need.clone();
        self.branch(&left, k, 0.0);
    }

    fn over_budget(&mut self) -> bool {
        self.probes += 1;
        self.probes > PROBE_BUDGET
    }

    /// Could the members, `added` more of `total` distance in all, and up to `slots` more
    /// still beat the best?
    fn may_beat(&self, total: f64, added: usize, slots: usize) -> bool {
        let count = self.members.len() + added + slots;
        match count.cmp(&self.best.len()) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => total + slots as f64 * self.nearest <= self.p.total(&self.best),
        }
    }

    fn offer(&mut self) {
        if self.p.cmp(&self.members, &self.best) == Ordering::Less {
            self.best = self.members.clone();
        }
    }

    fn branch(&mut self, left: &[i64], slots: usize, total: f64) {
        if done(left) {
            self.offer();
            return;
        }
        if slots == 0 || self.probes > PROBE_BUDGET {
            return;
        }
        // Can `slots` more members add up to every need at all?
        if left
            .iter()
            .zip(&self.most)
            .any(|(&l, &m)| m.saturating_mul(slots as i64) < l)
        {
            return;
        }
        let Some(line) = (0..self.p.n)
            .filter(|&l| left[l] > 0)
            .min_by_key(|&l| (self.givers[l].len(), l))
        else {
            return;
        };
        let mut tried = Vec::new();
        // By index: deeper levels may branch on the same line's givers.
        for g in 0..self.givers[line].len() {
            let c = self.givers[line][g];
            if self.used[c] {
                continue;
            }
            if self.over_budget() {
                break;
            }
            let d = self.p.dist[c];
            // Givers are nearest first: once one cannot beat the best, none after it can.
            if !self.may_beat(total + d, 1, slots - 1) {
                break;
            }
            if slots == 1 {
                if covers(left, self.p.gives(c)) {
                    self.members.push(c);
                    self.offer();
                    self.members.pop();
                    // The nearest giver of all that is missing: no farther one beats it.
                    break;
                }
                continue;
            }
            let mut next = left.to_vec();
            take(&mut next, self.p.gives(c));
            self.used[c] = true;
            tried.push(c);
            self.members.push(c);
            self.branch(&next, slots - 1, total + d);
            self.members.pop();
            // Stays used: every cover with `c` was just searched, so siblings skip it.
        }
        for c in tried {
            self.used[c] = false;
        }
    }
}

/// What each member gives: per member (nearest first), (line, quantity) in line order. A
/// whole line goes to the nearest member holding all of it; a split line takes from members
/// nearest first. Members left with nothing are dropped.
pub(super) fn allocate(p: &Problem, members: &[usize]) -> Vec<(usize, Vec<(usize, i64)>)> {
    let mut out: Vec<(usize, Vec<(usize, i64)>)> =
        members.iter().map(|&m| (m, Vec::new())).collect();
    for l in 0..p.n {
        let mut left = p.quantity[l];
        for (m, given) in out.iter_mut() {
            if left == 0 {
                break;
            }
            let has = p.gives(*m)[l];
            let give = match p.whole[l] {
                true if has > 0 => left,
                true => 0,
                false => has.min(left),
            };
            if give > 0 {
                given.push((l, give));
                left -= give;
            }
        }
    }
    out.retain(|(_, given)| !given.is_empty());
    out
}
