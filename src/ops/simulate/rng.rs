//! A small seeded generator and a Zipf-like sampler: the plan must be the same for the same
//! seed on every machine and every version of the dependencies, so it owns its randomness.

/// SplitMix64: tiny, fast, and statistically good enough for traffic shapes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); 0 when n is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform in [lo, hi] (inclusive).
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as usize) as i64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Samples an index from cumulative weights (the last entry is the total).
pub fn pick_cumulative(cumulative: &[f64], rng: &mut Rng) -> Option<usize> {
    let total = *cumulative.last()?;
    if total <= 0.0 {
        return None;
    }
    let x = rng.unit() * total;
    let i = cumulative.partition_point(|&c| c <= x);
    Some(i.min(cumulative.len() - 1))
}

/// Zipf-like popularity of rank `r` (0 = most popular) with exponent `skew` (0 = uniform).
pub fn zipf_weight(rank: usize, skew: f64) -> f64 {
    1.0 / ((rank + 1) as f64).powf(skew.max(0.0))
}

/// Cumulative Zipf weights for items given by their popularity ranks.
pub fn zipf_cumulative(ranks: impl IntoIterator<Item = usize>, skew: f64) -> Vec<f64> {
    let mut acc = 0.0;
    ranks
        .into_iter()
        .map(|r| {
            acc += zipf_weight(r, skew);
            acc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let a: Vec<u64> = (0..5)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..5)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..5)
            .scan(Rng::new(8), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn bounds_hold() {
        let mut r = Rng::new(1);
        for _ in 0..10_000 {
            assert!(r.below(3) < 3);
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            let x = r.range(2, 4);
            assert!((2..=4).contains(&x));
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.range(5, 5), 5);
    }

    #[test]
    fn zipf_makes_the_head_popular_and_zero_skew_is_uniform() {
        let mut r = Rng::new(3);
        let cum = zipf_cumulative(0..100, 1.2);
        let mut hits = [0u32; 100];
        for _ in 0..20_000 {
            hits[pick_cumulative(&cum, &mut r).expect("weights")] += 1;
        }
        assert!(hits[0] > hits[10] * 5, "{hits:?}");
        assert!(hits[0] > 4_000, "{}", hits[0]);
        let flat = zipf_cumulative(0..4, 0.0);
        assert_eq!(flat, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(pick_cumulative(&[], &mut r), None);
        assert_eq!(pick_cumulative(&[0.0, 0.0], &mut r), None);
    }
}
