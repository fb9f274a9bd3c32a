//! The plan: every request of the simulated day, decided up front from the catalogue and the
//! seed alone (no clock, no answers from the daemon), so that the same seed replays the same
//! requests. What happens to a request at run time (201 or 409) is the driver's business.

use std::collections::{BTreeSet, HashMap};

use crate::domain::location::LocationKind;
use crate::domain::movement::MovementKind;

use super::curve::{self, Traffic, DAY};
use super::rng::{pick_cumulative, zipf_cumulative, Rng};

/// A location as the simulation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub location_id: String,
    pub kind: LocationKind,
    pub lat: f64,
    pub lon: f64,
    pub pickup: bool,
    /// Minutes this location's clock is ahead of the network's (its zone against the e-shop's).
    pub shift_minutes: i32,
}

/// What the network holds at the start: the sites and each level's on-hand.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub sites: Vec<Site>,
    pub levels: Vec<(String, String, i64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlanConfig {
    pub seed: u64,
    /// Requests planned over the day (before the flash sale and the arrivals of transfers).
    pub requests: usize,
    /// Real milliseconds the simulated window is compressed into.
    pub run_ms: u64,
    /// First simulated minute (network clock) and how many minutes are simulated.
    pub start_minute: u32,
    pub sim_minutes: u32,
    /// Zipf exponent of SKU popularity (0 = uniform).
    pub skew: f64,
    /// The flash sale: at this network minute, this many one-unit holds on `flash_skus` SKUs.
    pub flash_minute: Option<u32>,
    pub flash_holds: usize,
    pub flash_skus: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The shopper pays (or collects): confirm, then a sale carrying the reservation.
    Buy,
    /// The shopper gives up and the shop releases the hold.
    Release,
    /// The shopper walks away: the hold is left to expire.
    Expire,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedMovement {
    pub kind: MovementKind,
    pub sku: String,
    pub quantity: i64,
    /// Plan-relative transfer number and, on the way out, the destination.
    pub transfer: Option<(u64, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// One NATS message on the location's movement subject (an array when several).
    Publish {
        location_id: String,
        movements: Vec<PlannedMovement>,
    },
    Read {
        sku: String,
        near: Option<(f64, f64)>,
    },
    /// A hold at the e-shop, then what the shopper does.
    Checkout {
        location_id: String,
        lines: Vec<(String, i64)>,
        outcome: Outcome,
    },
    /// `POST /v1/orders/route`: pickup at a store (BOPIS) or delivery.
    Route {
        pickup_location_id: Option<String>,
        customer: (f64, f64),
        lines: Vec<(String, i64)>,
        outcome: Outcome,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Plan-relative id (event ids, reservation and order ids derive from it).
    pub seq: u64,
    /// When to send it, in real milliseconds after the start.
    pub at_ms: u64,
    /// Simulated network time, minutes after midnight.
    pub minute: u32,
    pub label: &'static str,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub flash_skus: Vec<String>,
}

impl Plan {
    /// Planned steps per label.
    pub fn counts(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let mut m = std::collections::BTreeMap::new();
        for s in &self.steps {
            *m.entry(s.label).or_default() += 1;
        }
        m
    }
}

pub const FLASH_LABEL: &str = "flash_hold";

/// Builds the plan. Fails only on a catalogue it cannot shop in (no stores, no stock).
pub fn generate(catalog: &Catalog, cfg: &PlanConfig) -> Result<Plan, String> {
    let mut g = Generator::new(catalog, cfg)?;
    let sim_minutes = cfg.sim_minutes.clamp(1, DAY);
    let mut rng = Rng::new(cfg.seed);

    // How many of each kind: its daily share, over the kinds that happen in the window.
    let cums: Vec<(Traffic, Vec<f64>)> = Traffic::ALL
        .iter()
        .map(|&t| (t, curve::cumulative(t, cfg.start_minute, sim_minutes, 0)))
        .filter(|(_, c)| c.last().is_some_and(|&x| x > 0.0))
        .collect();
    let share_total: f64 = cums.iter().map(|(t, _)| t.share()).sum();
    let mut events: Vec<(f64, Traffic)> = Vec::with_capacity(cfg.requests);
    for (t, cum) in &cums {
        let n = (cfg.requests as f64 * t.share() / share_total).round() as usize;
        for _ in 0..n {
            let Some(m) = pick_cumulative(cum, &mut rng) else {
                break;
            };
            events.push((m as f64 + rng.unit(), *t));
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    events.truncate(cfg.requests);

    let to_ms = |offset: f64| -> u64 {
        ((offset / sim_minutes as f64) * cfg.run_ms as f64)
            .clamp(0.0, cfg.run_ms as f64)
            .round() as u64
    };
    let mut steps = Vec::new();
    let mut flash: Vec<(f64, ())> = Vec::new();
    if let Some(fm) = cfg.flash_minute {
        let rel = (fm as i64 - cfg.start_minute as i64).rem_euclid(DAY as i64) as f64;
        if rel < sim_minutes as f64 {
            // A flash sale opens at once: everyone arrives within the first simulated minutes.
            for _ in 0..cfg.flash_holds {
                flash.push((rel + rng.unit() * 3.0_f64.min(sim_minutes as f64 - rel), ()));
            }
        }
    }
    let flash_skus = g.flash_skus(cfg.flash_skus);
    let mut all: Vec<(f64, Option<Traffic>)> = events
        .into_iter()
        .map(|(o, t)| (o, Some(t)))
        .chain(flash.into_iter().map(|(o, ())| (o, None)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));

    // Transfers on their way: they reach the shadow shelf when they arrive.
    let mut pending: Vec<(f64, String, String, i64)> = Vec::new();
    for (offset, traffic) in all {
        pending.retain(|(at, loc, sku, q)| {
            if *at <= offset {
                g.add(loc, sku, *q);
                false
            } else {
                true
            }
        });
        let minute = (cfg.start_minute + offset as u32) % DAY;
        let at_ms = to_ms(offset);
        let produced = match traffic {
            None => g.flash_hold(&flash_skus, &mut rng),
            Some(t) => g.step(t, minute, &mut rng),
        };
        let Some((label, action)) = produced else {
            continue;
        };
        // A transfer arrives two to six simulated hours later (if still within the run).
        let arrival = match &action {
            Action::Publish { movements, .. } => movements.first().and_then(|m| {
                let (id, to) = m.transfer.as_ref()?;
                Some((*id, to.clone()?, m.sku.clone(), m.quantity))
            }),
            _ => None,
        };
        steps.push(Step {
            seq: steps.len() as u64,
            at_ms,
            minute,
            label,
            action,
        });
        if let Some((id, to, sku, quantity)) = arrival {
            let later = offset + rng.range(120, 360) as f64;
            let at = to_ms(later.min(sim_minutes as f64));
            pending.push((later, to.clone(), sku.clone(), quantity));
            steps.push(Step {
                seq: steps.len() as u64,
                at_ms: at,
                minute: (cfg.start_minute + later.min(sim_minutes as f64) as u32) % DAY,
                label: "transfer_in",
                action: Action::Publish {
                    location_id: to,
                    movements: vec![PlannedMovement {
                        kind: MovementKind::TransferIn,
                        sku,
                        quantity,
                        transfer: Some((id, None)),
                    }],
                },
            });
        }
    }
    // Stable by time; seq keeps the order of generation among equal times.
    steps.sort_by_key(|s| (s.at_ms, s.seq));
    Ok(Plan { steps, flash_skus })
}

/// The state of generation: the catalogue indexed, and a shadow of on-hand that follows the
/// plan's own movements, so that a till sells what is on its shelf.
struct Generator<'a> {
    sites: &'a [Site],
    stores: Vec<usize>,
    store_cum: Vec<f64>,
    warehouses: Vec<usize>,
    online: Option<usize>,
    skus: Vec<String>,
    /// Per site: its SKUs (indexes into `skus`) and their cumulative popularity.
    stocked: Vec<(Vec<usize>, Vec<f64>)>,
    /// Every SKU by popularity, for reads and deliveries.
    all_cum: Vec<f64>,
    rank: Vec<usize>,
    shadow: HashMap<(usize, usize), i64>,
    sku_index: HashMap<String, usize>,
    site_index: HashMap<String, usize>,
    transfers: u64,
}

const MAX_TRIES: usize = 8;

impl<'a> Generator<'a> {
    fn new(catalog: &'a Catalog, cfg: &PlanConfig) -> Result<Self, String> {
        let sites = &catalog.sites;
        let stores: Vec<usize> = (0..sites.len())
            .filter(|&i| sites[i].kind == LocationKind::Store)
            .collect();
        if stores.is_empty() {
            return Err("no stores: import the demo locations first".into());
        }
        let warehouses = (0..sites.len())
            .filter(|&i| sites[i].kind == LocationKind::Warehouse)
            .collect();
        let online = (0..sites.len()).find(|&i| sites[i].kind == LocationKind::Online);
        let site_index: HashMap<String, usize> = sites
            .iter()
            .enumerate()
            .map(|(i, s)| (s.location_id.clone(), i))
            .collect();
        let names: BTreeSet<&str> = catalog.levels.iter().map(|l| l.1.as_str()).collect();
        if names.is_empty() {
            return Err("no stock: import the demo stock first".into());
        }
        let skus: Vec<String> = names.into_iter().map(str::to_owned).collect();
        let sku_index: HashMap<String, usize> = skus
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i))
            .collect();
        // Popularity: a seeded shuffle, so the hot SKUs are the same everywhere in a run.
        let mut order: Vec<usize> = (0..skus.len()).collect();
        Rng::new(cfg.seed ^ 0x005E_ED0F_5C0E).shuffle(&mut order);
        let mut rank = vec![0; skus.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }
        let mut per_site: Vec<Vec<usize>> = vec![Vec::new(); sites.len()];
        let mut shadow = HashMap::new();
        for (loc, sku, on_hand) in &catalog.levels {
            if let (Some(&l), Some(&s)) = (site_index.get(loc), sku_index.get(sku)) {
                per_site[l].push(s);
                shadow.insert((l, s), *on_hand);
            }
        }
        let stocked = per_site
            .into_iter()
            .map(|mut v| {
                v.sort_unstable();
                v.dedup();
                let cum = zipf_cumulative(v.iter().map(|&s| rank[s]), cfg.skew);
                (v, cum)
            })
            .collect();
        let all_cum = zipf_cumulative(rank.iter().copied(), cfg.skew);
        // Bigger cities (lower ids in the demo) trade more.
        let store_cum = zipf_cumulative(0..stores.len(), 0.6);
        Ok(Generator {
            sites,
            stores,
            store_cum,
            warehouses,
            online,
            skus,
            stocked,
            all_cum,
            rank,
            shadow,
            sku_index,
            site_index,
            transfers: 0,
        })
    }

    fn on_hand(&self, site: usize, sku: usize) -> i64 {
        self.shadow.get(&(site, sku)).copied().unwrap_or(0)
    }

    fn add(&mut self, loc: &str, sku: &str, delta: i64) {
        if let (Some(&l), Some(&s)) = (self.site_index.get(loc), self.sku_index.get(sku)) {
            *self.shadow.entry((l, s)).or_default() += delta;
        }
    }

    /// A store open at `minute`, bigger ones more often.
    fn open_store(&self, minute: u32, rng: &mut Rng, need_open: bool) -> Option<usize> {
        for _ in 0..MAX_TRIES {
            let s = self.stores[pick_cumulative(&self.store_cum, rng)?];
            let local = curve::local_minute(minute, self.sites[s].shift_minutes);
            if !need_open || curve::open(local) > 0.0 {
                return Some(s);
            }
        }
        None
    }

    /// A popular SKU of `site` with at least `min` on the (shadow) shelf.
    fn sku_at(&self, site: usize, min: i64, rng: &mut Rng) -> Option<usize> {
        let (skus, cum) = &self.stocked[site];
        for _ in 0..MAX_TRIES {
            let s = skus[pick_cumulative(cum, rng)?];
            if self.on_hand(site, s) >= min {
                return Some(s);
            }
        }
        None
    }

    fn lines_at(&self, site: usize, n: usize, rng: &mut Rng) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = Vec::new();
        for _ in 0..n {
            if let Some(s) = self.sku_at(site, 1, rng) {
                if !out.iter().any(|(k, _)| *k == self.skus[s]) {
                    out.push((self.skus[s].clone(), 1));
                }
            }
        }
        out
    }

    fn near(&self, site: usize, rng: &mut Rng) -> (f64, f64) {
        let s = &self.sites[site];
        let j = |rng: &mut Rng| (rng.unit() - 0.5) * 0.06;
        (
            (s.lat + j(rng)).clamp(-90.0, 90.0),
            (s.lon + j(rng)).clamp(-180.0, 180.0),
        )
    }

    fn outcome(rng: &mut Rng, buy: f64, release: f64) -> Outcome {
        let x = rng.unit();
        if x < buy {
            Outcome::Buy
        } else if x < buy + release {
            Outcome::Release
        } else {
            Outcome::Expire
        }
    }

    fn movement(kind: MovementKind, sku: &str, quantity: i64) -> PlannedMovement {
        PlannedMovement {
            kind,
            sku: sku.to_owned(),
            quantity,
            transfer: None,
        }
    }

    fn publish(&mut self, site: usize, movements: Vec<PlannedMovement>) -> Action {
        let loc = self.sites[site].location_id.clone();
        for m in &movements {
            let delta = match m.kind {
                MovementKind::Receipt | MovementKind::Return | MovementKind::TransferIn => {
                    m.quantity
                }
                MovementKind::Sale | MovementKind::TransferOut | MovementKind::Damage => {
                    -m.quantity
                }
                MovementKind::Count => m.quantity - self.shadow_of(&loc, &m.sku),
                MovementKind::Adjustment => m.quantity,
            };
            self.add(&loc, &m.sku, delta);
        }
        Action::Publish {
            location_id: loc,
            movements,
        }
    }

    fn shadow_of(&self, loc: &str, sku: &str) -> i64 {
        match (self.site_index.get(loc), self.sku_index.get(sku)) {
            (Some(&l), Some(&s)) => self.on_hand(l, s),
            _ => 0,
        }
    }

    /// The most popular SKUs the e-shop has in stock.
    fn flash_skus(&self, n: usize) -> Vec<String> {
        let Some(o) = self.online else {
            return Vec::new();
        };
        let mut v: Vec<usize> = self.stocked[o]
            .0
            .iter()
            .copied()
            .filter(|&s| self.on_hand(o, s) > 0)
            .collect();
        v.sort_by_key(|&s| self.rank[s]);
        v.into_iter()
            .take(n)
            .map(|s| self.skus[s].clone())
            .collect()
    }

    fn flash_hold(&mut self, hot: &[String], rng: &mut Rng) -> Option<(&'static str, Action)> {
        let o = self.online?;
        let sku = hot.get(rng.below(hot.len()))?.clone();
        Some((
            FLASH_LABEL,
            Action::Checkout {
                location_id: self.sites[o].location_id.clone(),
                lines: vec![(sku, 1)],
                outcome: Self::outcome(rng, 0.6, 0.2),
            },
        ))
    }

    fn step(&mut self, t: Traffic, minute: u32, rng: &mut Rng) -> Option<(&'static str, Action)> {
        match t {
            Traffic::PosSale => {
                let store = self.open_store(minute, rng, true)?;
                let sku = self.sku_at(store, 1, rng)?;
                let on_hand = self.on_hand(store, sku);
                let q = match rng.below(20) {
                    0 => 3,
                    1..=3 => 2,
                    _ => 1,
                }
                .min(on_hand);
                let name = self.skus[sku].clone();
                let m = Self::movement(MovementKind::Sale, &name, q);
                Some(("pos_sale", self.publish(store, vec![m])))
            }
            Traffic::Return => {
                let store = self.open_store(minute, rng, true)?;
                let (skus, cum) = &self.stocked[store];
                let sku = skus[pick_cumulative(cum, rng)?];
                let name = self.skus[sku].clone();
                let m = Self::movement(MovementKind::Return, &name, 1);
                Some(("return", self.publish(store, vec![m])))
            }
            Traffic::Receipt => {
                // The warehouse receives most; stores take direct deliveries too.
                let site = if !self.warehouses.is_empty() && rng.chance(0.6) {
                    self.warehouses[rng.below(self.warehouses.len())]
                } else {
                    self.open_store(minute, rng, false)?
                };
                let (skus, cum) = &self.stocked[site];
                let mut names = BTreeSet::new();
                for _ in 0..rng.range(3, 12) {
                    if let Some(i) = pick_cumulative(cum, rng) {
                        names.insert(skus[i]);
                    }
                }
                let movements: Vec<PlannedMovement> = names
                    .into_iter()
                    .map(|s| {
                        let q = rng.range(6, 24);
                        Self::movement(MovementKind::Receipt, &self.skus[s], q)
                    })
                    .collect();
                if movements.is_empty() {
                    return None;
                }
                Some(("receipt", self.publish(site, movements)))
            }
            Traffic::Transfer => {
                // Replenishment from the warehouse, or stock rebalanced between stores.
                let from = if !self.warehouses.is_empty() && rng.chance(0.7) {
                    self.warehouses[rng.below(self.warehouses.len())]
                } else {
                    self.open_store(minute, rng, false)?
                };
                let to = self.open_store(minute, rng, false)?;
                if to == from {
                    return None;
                }
                let sku = self.sku_at(from, 4, rng)?;
                let q = rng.range(1, (self.on_hand(from, sku) / 2).clamp(1, 6));
                self.transfers += 1;
                let mut m = Self::movement(MovementKind::TransferOut, &self.skus[sku], q);
                m.transfer = Some((self.transfers, Some(self.sites[to].location_id.clone())));
                Some(("transfer_out", self.publish(from, vec![m])))
            }
            Traffic::Count => {
                let store = self.open_store(minute, rng, false)?;
                let (skus, cum) = &self.stocked[store];
                let sku = skus[pick_cumulative(cum, rng)?];
                // Now and then the count finds a unit missing (shrinkage).
                let shrink = i64::from(rng.chance(0.2));
                let counted = (self.on_hand(store, sku) - shrink).max(0);
                let name = self.skus[sku].clone();
                let m = Self::movement(MovementKind::Count, &name, counted);
                Some(("count", self.publish(store, vec![m])))
            }
            Traffic::Read => {
                let sku = self.skus[self.sku_by_rank(rng)?].clone();
                let near = if rng.chance(0.25) {
                    let s = self.open_store(minute, rng, false)?;
                    Some(self.near(s, rng))
                } else {
                    None
                };
                Some(("read", Action::Read { sku, near }))
            }
            Traffic::Checkout => {
                let o = self.online?;
                let lines = self.lines_at(o, rng.range(1, 3) as usize, rng);
                if lines.is_empty() {
                    return None;
                }
                let outcome = Self::outcome(rng, 0.7, 0.15);
                if outcome == Outcome::Buy {
                    for (s, q) in &lines {
                        let loc = self.sites[o].location_id.clone();
                        self.add(&loc, s, -q);
                    }
                }
                Some((
                    "checkout",
                    Action::Checkout {
                        location_id: self.sites[o].location_id.clone(),
                        lines,
                        outcome,
                    },
                ))
            }
            Traffic::Bopis => {
                let store = self.open_store(minute, rng, true)?;
                if !self.sites[store].pickup {
                    return None;
                }
                let lines = self.lines_at(store, rng.range(1, 2) as usize, rng);
                if lines.is_empty() {
                    return None;
                }
                let customer = self.near(store, rng);
                Some((
                    "bopis",
                    Action::Route {
                        pickup_location_id: Some(self.sites[store].location_id.clone()),
                        customer,
                        lines,
                        outcome: Self::outcome(rng, 0.8, 0.2),
                    },
                ))
            }
            Traffic::Delivery => {
                let home = self.open_store(minute, rng, false)?;
                let customer = self.near(home, rng);
                let mut lines: Vec<(String, i64)> = Vec::new();
                for _ in 0..rng.range(1, 3) {
                    let s = self.sku_by_rank(rng)?;
                    if !lines.iter().any(|(k, _)| *k == self.skus[s]) {
                        lines.push((self.skus[s].clone(), 1));
                    }
                }
                Some((
                    "delivery",
                    Action::Route {
                        pickup_location_id: None,
                        customer,
                        lines,
                        outcome: Self::outcome(rng, 0.85, 0.15),
                    },
                ))
            }
        }
    }

    fn sku_by_rank(&self, rng: &mut Rng) -> Option<usize> {
        pick_cumulative(&self.all_cum, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn demo_like() -> Catalog {
        let mut sites = vec![
            Site {
                location_id: "ESHOP".into(),
                kind: LocationKind::Online,
                lat: 25.05,
                lon: 121.52,
                pickup: false,
                shift_minutes: 0,
            },
            Site {
                location_id: "WH".into(),
                kind: LocationKind::Warehouse,
                lat: 24.9,
                lon: 121.2,
                pickup: false,
                shift_minutes: 0,
            },
        ];
        for i in 0..5 {
            sites.push(Site {
                location_id: format!("S{i}"),
                kind: LocationKind::Store,
                lat: 25.0 - i as f64 * 0.3,
                lon: 121.5 - i as f64 * 0.1,
                pickup: true,
                shift_minutes: 0,
            });
        }
        let mut levels = Vec::new();
        for s in &sites {
            for k in 0..40 {
                levels.push((s.location_id.clone(), format!("SKU-{k:02}"), 5 + k % 7));
            }
        }
        Catalog { sites, levels }
    }

    fn config(seed: u64) -> PlanConfig {
        PlanConfig {
            seed,
            requests: 2_000,
            run_ms: 60_000,
            start_minute: 0,
            sim_minutes: DAY,
            skew: 1.1,
            flash_minute: Some(20 * 60),
            flash_holds: 100,
            flash_skus: 2,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_plan_and_another_seed_another() {
        let c = demo_like();
        let a = generate(&c, &config(42)).expect("plan");
        let b = generate(&c, &config(42)).expect("plan");
        let other = generate(&c, &config(43)).expect("plan");
        assert_eq!(a, b);
        assert_ne!(a.steps, other.steps);
    }

    #[test]
    fn every_kind_is_planned_and_the_count_is_bounded() {
        let plan = generate(&demo_like(), &config(1)).expect("plan");
        let counts = plan.counts();
        for label in [
            "pos_sale",
            "return",
            "receipt",
            "transfer_out",
            "transfer_in",
            "count",
            "read",
            "checkout",
            "bopis",
            "delivery",
            FLASH_LABEL,
        ] {
            assert!(
                counts.get(label).copied().unwrap_or(0) > 0,
                "{label}: {counts:?}"
            );
        }
        assert_eq!(counts[FLASH_LABEL], 100);
        // The day's requests, plus the flash sale, plus one arrival per transfer.
        assert!(plan.steps.len() <= 2_000 + 100 + counts["transfer_out"]);
        assert!(plan.steps.iter().all(|s| s.at_ms <= 60_000));
        assert!(plan.steps.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        assert_eq!(plan.flash_skus.len(), 2);
    }

    #[test]
    fn tills_ring_only_while_the_store_is_open_and_peak_at_lunch_and_evening() {
        let plan = generate(&demo_like(), &config(5)).expect("plan");
        let sales: Vec<u32> = plan
            .steps
            .iter()
            .filter(|s| s.label == "pos_sale")
            .map(|s| s.minute)
            .collect();
        assert!(sales.iter().all(|&m| (600..1320).contains(&m)), "{sales:?}");
        let hour = |h: u32| sales.iter().filter(|&&m| m / 60 == h).count();
        assert!(
            hour(12) > hour(15),
            "lunch {} vs afternoon {}",
            hour(12),
            hour(15)
        );
        assert!(
            hour(19) > hour(15),
            "evening {} vs afternoon {}",
            hour(19),
            hour(15)
        );
    }

    #[test]
    fn skew_concentrates_sales_on_few_skus() {
        let share_of_top = |skew: f64| {
            let mut cfg = config(9);
            cfg.skew = skew;
            let plan = generate(&demo_like(), &cfg).expect("plan");
            let mut by_sku: HashMap<String, usize> = HashMap::new();
            let mut total = 0;
            for s in &plan.steps {
                if let Action::Read { sku, .. } = &s.action {
                    *by_sku.entry(sku.clone()).or_default() += 1;
                    total += 1;
                }
            }
            let top = by_sku.values().copied().max().unwrap_or(0);
            top as f64 / total as f64
        };
        assert!(share_of_top(1.5) > 3.0 * share_of_top(0.0));
    }

    #[test]
    fn till_sales_never_take_the_planned_shelf_below_zero() {
        let c = demo_like();
        let plan = generate(&c, &config(11)).expect("plan");
        let mut shelf: HashMap<(String, String), i64> = c
            .levels
            .iter()
            .map(|(l, s, q)| ((l.clone(), s.clone()), *q))
            .collect();
        for step in &plan.steps {
            if let Action::Publish {
                location_id,
                movements,
            } = &step.action
            {
                for m in movements {
                    let e = shelf
                        .entry((location_id.clone(), m.sku.clone()))
                        .or_default();
                    match m.kind {
                        MovementKind::Sale => {
                            assert!(*e >= m.quantity, "{step:?} sells {} of {e}", m.quantity);
                            *e -= m.quantity;
                        }
                        MovementKind::Count => *e = m.quantity,
                        MovementKind::TransferOut => *e -= m.quantity,
                        _ => *e += m.quantity,
                    }
                }
            }
        }
    }

    #[test]
    fn a_window_without_the_flash_sale_plans_none_and_no_stores_is_an_error() {
        let mut cfg = config(2);
        cfg.start_minute = 0;
        cfg.sim_minutes = 6 * 60;
        let plan = generate(&demo_like(), &cfg).expect("plan");
        assert!(!plan.counts().contains_key(FLASH_LABEL));
        assert!(
            !plan.counts().contains_key("pos_sale"),
            "stores are closed before 10:00"
        );
        let mut c = demo_like();
        c.sites.retain(|s| s.kind != LocationKind::Store);
        assert!(generate(&c, &cfg).is_err());
    }
}
