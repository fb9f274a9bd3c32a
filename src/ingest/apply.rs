//! Applying movements to the truth: a whole batch in one PostgreSQL transaction.
//!
//! Exactly-once comes from three things together: the level rows of the batch are locked in a
//! fixed order, the ledger is asked which `event_id`s it already holds *after* the locks are
//! taken, and `event_id` is unique in the ledger (a racing daemon that slips past the check
//! gets a unique violation, and the retry then sees a duplicate). The caller acks only after
//! this returns.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::cache::StockCache;
use crate::db;
use crate::db::levels::LevelRow;
use crate::db::movements::NewLedgerRow;
use crate::domain::level::{self, LevelFacts, MovementFact, RecordedDelta};
use crate::domain::movement::{Incoming, Movement, MovementKind};
use crate::domain::reservation::{self, Status};
use crate::domain::transfer::TransferLine;
use crate::events::{self, LevelChange};

/// Locks the levels of the keys (given in key order) and returns them. Most batches touch
/// levels that exist, and then this is one statement. Keys without a level get one (and their
/// SKU a catalogue row) and are locked after the others: out of key order, so a writer that
/// created one of them in the meantime and then waits for a level locked here deadlocks with
/// this batch. PostgreSQL breaks that within `deadlock_timeout`, and the batch is retried
/// (`db::is_retryable`). Ingest shards by SKU, so no other shard touches these levels: it takes
/// another writer (a supply line, another daemon's ingest) creating the same level at that
/// instant.
async fn lock_levels(
    conn: &mut PgConnection,
    locations: &[String],
    skus: &[String],
) -> Result<Vec<LevelRow>, sqlx::Error> {
    let mut locked = db::levels::lock(conn, locations, skus).await?;
    if locked.len() == locations.len() {
        return Ok(locked);
    }
    let have: HashSet<(&str, &str)> = locked
        .iter()
        .map(|l| (l.location_id.as_str(), l.sku.as_str()))
        .collect();
    let (new_locs, new_skus): (Vec<String>, Vec<String>) = locations
        .iter()
        .zip(skus)
        .filter(|(l, s)| !have.contains(&(l.as_str(), s.as_str())))
        .map(|(l, s)| (l.clone(), s.clone()))
        .unzip();
    let catalogue: Vec<String> = new_skus
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    db::levels::ensure_skus(conn, &catalogue).await?;
    db::levels::ensure(conn, &new_locs, &new_skus).await?;
    locked.extend(db::levels::lock(conn, &new_locs, &new_skus).await?);
    Ok(locked)
}

/// What one applied batch did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Movements newly recorded in the ledger.
    pub recorded: usize,
    /// Movements whose `event_id` was already recorded (or repeated within the batch).
    pub duplicates: usize,
    /// Positions (in the slice given) of those duplicates, for callers that answer per
    /// movement (`POST /v1/movements`); ascending.
    pub duplicate_at: Vec<usize>,
    /// Of the recorded, how many changed nothing because a count had already seen them.
    pub late: usize,
    /// Levels after the batch, for every level whose quantities changed.
    pub changed: Vec<LevelRow>,
    /// Movements refused because their effect does not fit an i64: (position in the slice
    /// given, why). The rest of the batch was applied without them.
    pub rejected: Vec<(usize, String)>,
}

type Key = (String, String);
/// A movement with its position in the slice given.
type Indexed<'a> = (usize, &'a Movement);

/// How many times a batch is retried on deadlock, serialization failure or a raced event id.
const ATTEMPTS: usize = 5;

/// Applies movements of known locations in one transaction, retrying on transient conflicts,
/// then makes the changed levels visible (the after-commit step every writer shares).
pub async fn apply_batch(
    pool: &PgPool,
    cache: Option<&StockCache>,
    movements: &[Incoming],
) -> Result<Applied, sqlx::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut tx = pool.begin().await?;
        match apply_in(&mut tx, movements).await {
            Ok(applied) => {
                crate::commit::commit(tx, cache, &applied.changed).await?;
                return Ok(applied);
            }
            Err(e) if attempt < ATTEMPTS && db::is_retryable(&e) => {
                tracing::debug!(error = %e, attempt, "retrying movement batch");
                drop(tx);
                tokio::time::sleep(std::time::Duration::from_millis(5 * attempt as u64)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Applies movements inside the caller's transaction. Every movement's location must exist.
/// The publish time of each is recorded with it in the ledger (a redelivery carries the same
/// JetStream publish time, and a duplicate records nothing).
pub async fn apply_in(
    conn: &mut PgConnection,
    incoming: &[Incoming],
) -> Result<Applied, sqlx::Error> {
    let movements: Vec<&Movement> = incoming.iter().map(|i| &i.movement).collect();
    let mut out = Applied::default();
    // The first of a repeated event_id wins; later copies are duplicates.
    let mut seen = HashSet::new();
    let fresh_at: Vec<(usize, &Movement)> = movements
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, m)| seen.insert(m.event_id.as_str()))
        .collect();
    let fresh: Vec<&Movement> = fresh_at.iter().map(|&(_, m)| m).collect();
    out.duplicates = movements.len() - fresh.len();
    {
        let firsts: HashSet<usize> = fresh_at.iter().map(|&(i, _)| i).collect();
        out.duplicate_at = (0..movements.len())
            .filter(|i| !firsts.contains(i))
            .collect();
    }
    if fresh.is_empty() {
        return Ok(out);
    }

    // Lock order, shared by every writer: reservations, transfers, then levels by key.
    let mut holds = Holds::lock(conn, &fresh).await?;
    let mut transit = Transit::lock(conn, &fresh).await?;
    let mut keys: BTreeSet<(&str, &str)> = fresh
        .iter()
        .map(|m| (m.location_id.as_str(), m.sku.as_str()))
        .collect();
    keys.extend(transit.destination_keys());
    let (key_locs, key_skus): (Vec<String>, Vec<String>) = keys
        .iter()
        .map(|(l, s)| (l.to_string(), s.to_string()))
        .unzip();
    let locked = lock_levels(conn, &key_locs, &key_skus).await?;

    let ids: Vec<&str> = fresh.iter().map(|m| m.event_id.as_str()).collect();
    let existing = db::movements::existing_event_ids(conn, &ids).await?;
    let (todo, known): (Vec<Indexed>, Vec<Indexed>) = fresh_at
        .into_iter()
        .partition(|(_, m)| !existing.contains(&m.event_id));
    out.duplicates += known.len();
    out.duplicate_at.extend(known.iter().map(|&(i, _)| i));
    out.duplicate_at.sort_unstable();
    if todo.is_empty() {
        return Ok(out);
    }

    let todo_movements: Vec<&Movement> = todo.iter().map(|&(_, m)| m).collect();
    // After the dedupe: a redelivered movement never reaches its supply line again.
    let mut fills = crate::supply::Fills::lock(conn, &todo_movements).await?;
    let mut recorded = recorded_deltas_for_counts(conn, &todo_movements).await?;
    let mut levels: HashMap<Key, (LevelRow, LevelRow)> = locked
        .into_iter()
        .map(|r| ((r.location_id.clone(), r.sku.clone()), (r.clone(), r)))
        .collect();

    let mut ledger = Vec::with_capacity(todo.len());
    let mut changes = Vec::new();
    for &(index, m) in &todo {
        let key = (m.location_id.clone(), m.sku.clone());
        let Some((_, row)) = levels.get(&key) else {
            // ensure() + lock() cover every key; a missing row means the schema changed under us.
            return Err(sqlx::Error::RowNotFound);
        };
        // Everything is computed on copies first: a movement whose effect overflows is
        // rejected alone and leaves no trace on the levels, holds and transfers of the rest.
        let plan = match plan(
            m,
            row,
            &levels,
            recorded.entry(key.clone()).or_default(),
            &holds,
            &transit,
        ) {
            Ok(p) => p,
            Err(overflow) => {
                out.rejected.push((index, overflow.to_string()));
                continue;
            }
        };
        // Preorders on the line this arrival fills become ordinary holds on the arrived stock.
        let fill = fills.plan(m);
        let converted = fill.as_ref().map_or(0, |f| f.converted);
        let Some(reserved) = plan.reserved.checked_add(converted) else {
            out.rejected.push((index, level::Overflow.to_string()));
            continue;
        };
        let link = fill
            .as_ref()
            .filter(|_| m.supply_id.is_some())
            .map(|f| f.link.as_str());
        holds.commit(m, plan.consumed);
        transit.commit(m, plan.line);
        fills.commit(fill);
        // Quantities before this movement, of every level it touches.
        let mut before: Vec<(Key, LevelRow)> = Vec::new();
        if let Some((_, row)) = levels.get_mut(&key) {
            before.push((key.clone(), row.clone()));
            row.reserved = reserved;
            row.on_hand = plan.facts.on_hand;
            row.last_count_at = plan.facts.last_count_at;
            row.last_movement_at = Some(
                row.last_movement_at
                    .map_or(m.occurred_at, |t| t.max(m.occurred_at)),
            );
        }
        for (k, in_transit) in plan.in_transit {
            if let Some((_, r)) = levels.get_mut(&k) {
                if !before.iter().any(|(b, _)| *b == k) {
                    before.push((k, r.clone()));
                }
                r.in_transit = in_transit;
            }
        }
        for (k, b) in before {
            let Some((_, r)) = levels.get_mut(&k) else {
                continue;
            };
            if (r.on_hand, r.reserved, r.in_transit) != (b.on_hand, b.reserved, b.in_transit) {
                r.version += 1;
                changes.push(change(&b, r, m.kind.as_str(), Some(m.event_id.clone())));
            }
        }
        let effect = plan.effect;
        if effect.outcome == level::Outcome::Late {
            out.late += 1;
        }
        ledger.push(NewLedgerRow {
            event_id: &m.event_id,
            location_id: &m.location_id,
            sku: &m.sku,
            kind: m.kind.as_str(),
            quantity: m.quantity,
            signed_quantity: m.signed_delta(),
            effect: effect.on_hand_change,
            outcome: effect.outcome.as_str(),
            on_hand_after: effect.on_hand_after,
            occurred_at: m.occurred_at,
            published_at: incoming[index].published_at,
            source: m.source.as_deref(),
            reference: m.reference.as_deref(),
            reservation_id: m.reservation_id.as_deref(),
            transfer_id: m.transfer_id.as_deref(),
            to_location_id: m.to_location_id.as_deref(),
            supply_id: m.supply_id.as_deref(),
            supply_outcome: link,
        });
    }
    if ledger.is_empty() {
        return Ok(out);
    }

    let touched: Vec<LevelRow> = levels
        .into_values()
        .filter(|(before, after)| before != after)
        .map(|(before, after)| {
            if after.version != before.version {
                out.changed.push(after.clone());
            }
            after
        })
        .collect();
    db::levels::update(conn, &touched).await?;
    db::movements::insert(conn, &ledger).await?;
    holds.save(conn).await?;
    transit.save(conn).await?;
    fills.save(conn).await?;
    transit.save_supply(conn).await?;
    events::record(conn, &changes).await?;
    out.recorded = ledger.len();
    out.changed
        .sort_by(|a, b| (&a.sku, &a.location_id).cmp(&(&b.sku, &b.location_id)));
    Ok(out)
}

/// The change event of a level, from its row before and after.
pub fn change(
    before: &LevelRow,
    after: &LevelRow,
    cause: &'static str,
    reference: Option<String>,
) -> LevelChange {
    LevelChange {
        location_id: after.location_id.clone(),
        sku: after.sku.clone(),
        before_on_hand: before.on_hand,
        before_reserved: before.reserved,
        on_hand: after.on_hand,
        reserved: after.reserved,
        in_transit: after.in_transit,
        version: after.version,
        cause,
        reference,
    }
}

/// What one movement will do, computed before anything is changed.
struct Plan {
    facts: LevelFacts,
    effect: level::Effect,
    consumed: i64,
    reserved: i64,
    line: Option<((String, String), TransferLine)>,
    /// New `in_transit` of the levels the movement's transfer line moves stock between.
    in_transit: Vec<(Key, i64)>,
}

/// Checks every sum a movement makes. On `Err` nothing changed but possibly `recorded` of
/// a count (which `level::apply` leaves untouched on overflow).
fn plan(
    m: &Movement,
    row: &LevelRow,
    levels: &HashMap<Key, (LevelRow, LevelRow)>,
    recorded: &mut Vec<RecordedDelta>,
    holds: &Holds,
    transit: &Transit,
) -> Result<Plan, level::Overflow> {
    let consumed = holds.peek(m);
    let reserved = row.reserved.checked_sub(consumed).ok_or(level::Overflow)?;
    let (line, moves) = match transit.tentative(m)? {
        Some((key, line, moves)) => (Some((key, line)), moves),
        None => (None, Vec::new()),
    };
    let mut in_transit: Vec<(Key, i64)> = Vec::new();
    for (location, delta) in moves {
        let k = (location, m.sku.clone());
        let Some((_, r)) = levels.get(&k) else {
            continue;
        };
        let current = in_transit
            .iter()
            .rev()
            .find(|(p, _)| *p == k)
            .map_or(r.in_transit, |(_, v)| *v);
        let next = current.checked_add(delta).ok_or(level::Overflow)?;
        in_transit.push((k, next));
    }
    // Last, as it is the one step that records (the delta, for later counts of the batch).
    let mut facts = LevelFacts {
        on_hand: row.on_hand,
        last_count_at: row.last_count_at,
    };
    let effect = level::apply(
        &mut facts,
        recorded,
        MovementFact {
            kind: m.kind,
            quantity: m.quantity,
            occurred_at: m.occurred_at,
        },
    )?;
    Ok(Plan {
        facts,
        effect,
        consumed,
        reserved,
        line,
        in_transit,
    })
}

/// For every key that has a count in this batch: the deltas already recorded after the
/// earliest such count, which a count adds back to the counted quantity.
async fn recorded_deltas_for_counts(
    conn: &mut PgConnection,
    todo: &[&Movement],
) -> Result<HashMap<Key, Vec<RecordedDelta>>, sqlx::Error> {
    let mut earliest: BTreeMap<(&str, &str), DateTime<Utc>> = BTreeMap::new();
    for m in todo.iter().filter(|m| m.kind == MovementKind::Count) {
        let e = earliest
            .entry((m.location_id.as_str(), m.sku.as_str()))
            .or_insert(m.occurred_at);
        *e = (*e).min(m.occurred_at);
    }
    let mut out: HashMap<Key, Vec<RecordedDelta>> = HashMap::new();
    if earliest.is_empty() {
        return Ok(out);
    }
    let locs: Vec<&str> = earliest.keys().map(|k| k.0).collect();
    let skus: Vec<&str> = earliest.keys().map(|k| k.1).collect();
    let after: Vec<DateTime<Utc>> = earliest.values().copied().collect();
    for r in db::movements::deltas_after(conn, &locs, &skus, &after).await? {
        out.entry((r.location_id, r.sku))
            .or_default()
            .push(RecordedDelta {
                occurred_at: r.occurred_at,
                delta: r.signed_quantity,
            });
    }
    Ok(out)
}

/// The holds that movements of a batch may consume: a sale or transfer out carrying the
/// `reservation_id` of a live hold at its location releases up to its quantity of that SKU.
#[derive(Default)]
struct Holds {
    /// (reservation, SKU) → (location, still held).
    lines: HashMap<(String, String), (String, i64)>,
    touched: BTreeSet<(String, String)>,
}

impl Holds {
    fn consumes(m: &Movement) -> Option<&str> {
        matches!(m.kind, MovementKind::Sale | MovementKind::TransferOut)
            .then_some(m.reservation_id.as_deref())
            .flatten()
    }

    async fn lock(conn: &mut PgConnection, movements: &[&Movement]) -> Result<Self, sqlx::Error> {
        let ids: Vec<String> = movements
            .iter()
            .filter_map(|m| Self::consumes(m))
            .map(str::to_owned)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut holds = Holds::default();
        if ids.is_empty() {
            return Ok(holds);
        }
        let live: HashMap<String, String> = db::reservations::lock(conn, &ids)
            .await?
            .into_iter()
            .filter(|r| Status::parse(&r.status).is_some_and(Status::is_live))
            .map(|r| (r.reservation_id, r.location_id))
            .collect();
        let live_ids: Vec<String> = live.keys().cloned().collect();
        for l in db::reservations::lines(&mut *conn, &live_ids).await? {
            if let Some(location) = live.get(&l.reservation_id) {
                holds
                    .lines
                    .insert((l.reservation_id, l.sku), (location.clone(), l.held));
            }
        }
        Ok(holds)
    }

    /// What `m` would release from its reservation's hold (0 when it carries none that applies).
    fn peek(&self, m: &Movement) -> i64 {
        let Some(id) = Self::consumes(m) else {
            return 0;
        };
        match self.lines.get(&(id.to_owned(), m.sku.clone())) {
            Some((location, held)) if *location == m.location_id => {
                reservation::consumed(*held, m.quantity)
            }
            _ => 0,
        }
    }

    /// Releases `consumed` (as [`Self::peek`] said) from the hold `m` carries.
    fn commit(&mut self, m: &Movement, consumed: i64) {
        let Some(id) = Self::consumes(m) else {
            return;
        };
        if consumed <= 0 {
            return;
        }
        let key = (id.to_owned(), m.sku.clone());
        if let Some((_, held)) = self.lines.get_mut(&key) {
            // consumed <= held (reservation::consumed), so this stays >= 0.
            *held -= consumed;
            self.touched.insert(key);
        }
    }

    /// Writes the consumed lines; a reservation with nothing left held is fulfilled.
    async fn save(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.touched.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::new();
        let mut skus = Vec::new();
        let mut held = Vec::new();
        for key in &self.touched {
            ids.push(key.0.as_str());
            skus.push(key.1.as_str());
            held.push(self.lines.get(key).map_or(0, |(_, h)| *h));
        }
        db::reservations::set_held(conn, &ids, &skus, &held).await?;
        let touched: Vec<String> = ids
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let done = db::reservations::fully_consumed(conn, &touched).await?;
        if !done.is_empty() {
            db::reservations::set_status(conn, &done, Status::Fulfilled.as_str()).await?;
        }
        Ok(())
    }
}

/// Transfer lines touched by a batch, and the in-transit accounting they move between levels.
#[derive(Default)]
struct Transit {
    lines: db::transfers::Lines,
    /// Registered locations among possible destinations (only they have a level to count at).
    known: HashSet<String>,
    /// Per line, the locations whose in-transit it may change: the one counting it now, its
    /// destination, and those the batch's movements of that line name.
    destinations: HashMap<(String, String), BTreeSet<String>>,
    /// Expected arrivals given by transfer_outs of the batch.
    arrivals: HashMap<(String, String), DateTime<Utc>>,
}

impl Transit {
    fn line_of(m: &Movement) -> Option<(String, String)> {
        matches!(m.kind, MovementKind::TransferOut | MovementKind::TransferIn)
            .then(|| m.transfer_id.clone())
            .flatten()
            .map(|t| (t, m.sku.clone()))
    }

    async fn lock(conn: &mut PgConnection, movements: &[&Movement]) -> Result<Self, sqlx::Error> {
        let mut t = Transit::default();
        let keys: BTreeSet<(String, String)> =
            movements.iter().filter_map(|m| Self::line_of(m)).collect();
        if keys.is_empty() {
            return Ok(t);
        }
        let ids: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let skus: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        t.lines = db::transfers::lock(conn, &ids, &skus).await?;
        for (key, l) in &t.lines {
            t.destinations.entry(key.clone()).or_default().extend(
                l.accounted_to
                    .iter()
                    .chain(l.to_location_id.iter())
                    .cloned(),
            );
        }
        for m in movements.iter() {
            let Some(key) = Self::line_of(m) else {
                continue;
            };
            let set = t.destinations.entry(key).or_default();
            set.extend(m.to_location_id.iter().cloned());
            if m.kind == MovementKind::TransferIn {
                set.insert(m.location_id.clone());
            }
        }
        let candidates: Vec<String> = t
            .destinations
            .values()
            .flatten()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        t.known = db::locations::known_ids(&mut *conn, &candidates).await?;
        Ok(t)
    }

    /// Levels whose in-transit count this batch may change: they must be locked with the rest.
    /// Only each line's own locations: pairing every destination with every SKU of the batch
    /// created empty levels (never cached) at stores the transfer never went to.
    fn destination_keys(&self) -> Vec<(&str, &str)> {
        self.destinations
            .iter()
            .filter(|(key, _)| self.lines.contains_key(*key))
            .flat_map(|((_, sku), locs)| {
                locs.iter()
                    .filter(|l| self.known.contains(*l))
                    .map(move |l| (l.as_str(), sku.as_str()))
            })
            .collect()
    }

    /// The line as a transfer movement would leave it, and the in-transit changes it causes;
    /// `None` when the movement has no line. Nothing is changed until [`Self::commit`].
    #[allow(clippy::type_complexity)]
    fn tentative(
        &self,
        m: &Movement,
    ) -> Result<Option<((String, String), TransferLine, Vec<(String, i64)>)>, level::Overflow> {
        let Some(key) = Self::line_of(m) else {
            return Ok(None);
        };
        let Some(current) = self.lines.get(&key) else {
            return Ok(None);
        };
        let mut line = current.clone();
        match m.kind {
            MovementKind::TransferOut => {
                line.shipped = line
                    .shipped
                    .checked_add(m.quantity)
                    .ok_or(level::Overflow)?;
                line.from_location_id
                    .get_or_insert_with(|| m.location_id.clone());
                if let Some(to) = &m.to_location_id {
                    line.to_location_id.get_or_insert_with(|| to.clone());
                }
            }
            _ => {
                line.received = line
                    .received
                    .checked_add(m.quantity)
                    .ok_or(level::Overflow)?;
                line.to_location_id
                    .get_or_insert_with(|| m.location_id.clone());
            }
        }
        let known = &self.known;
        let moves = line.settle(|l| known.contains(l));
        Ok(Some((key, line, moves)))
    }

    fn commit(&mut self, m: &Movement, line: Option<((String, String), TransferLine)>) {
        if let (Some(at), Some((key, _))) = (m.expected_at, &line) {
            // The latest transfer_out of the batch says when the transfer arrives.
            self.arrivals.insert(key.clone(), at);
        }
        if let Some((key, line)) = line {
            self.lines.insert(key, line);
        }
    }

    async fn save(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.lines.is_empty() {
            return Ok(());
        }
        db::transfers::save(conn, &self.lines).await
    }

    /// Shows each shipped line bound for a registered location as supply there (`transfer:`
    /// lines that preorders may hold against), with what is still in transit as remaining.
    async fn save_supply(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let mut rows = Vec::new();
        for ((transfer, sku), l) in &self.lines {
            let Some(to) = l
                .to_location_id
                .as_deref()
                .filter(|t| self.known.contains(*t))
            else {
                continue;
            };
            if l.shipped <= 0 {
                continue;
            }
            rows.push(db::supply::TransferSupply {
                supply_id: crate::domain::supply::transfer_supply_id(transfer, sku),
                location_id: to,
                sku,
                shipped: l.shipped,
                received: l.received,
                remaining: if l.accounted_to.as_deref() == Some(to) {
                    l.accounted
                } else {
                    0
                },
                expected_at: self.arrivals.get(&(transfer.clone(), sku.clone())).copied(),
            });
        }
        if rows.is_empty() {
            return Ok(());
        }
        db::supply::mirror_transfers(conn, &rows).await
    }
}
