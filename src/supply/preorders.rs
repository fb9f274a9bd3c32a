//! Preorder holds: on open supply at the location first (earliest expected), then on stock.

use sqlx::PgConnection;

use crate::db;
use crate::db::supply::SupplyRow;
use crate::domain::availability::available;
use crate::domain::reservation::Shortfall;
use crate::domain::supply as rules;
use crate::holds::reservations::{self, Held, NewHold, NotHeld};
use crate::ingest::apply::change;

use super::lines::state;

/// Takes a preorder hold inside the caller's transaction: each line holds on the free
/// remaining of open supply at the location (earliest expected first), then on stock
/// available now, never more than both together. On `Err(NotHeld)` the caller rolls back.
pub async fn hold_preorder_in(
    conn: &mut PgConnection,
    h: &NewHold<'_>,
) -> Result<Result<Held, NotHeld>, sqlx::Error> {
    let (skus, channel) = match reservations::begin(conn, h).await? {
        Ok(started) => started,
        Err(not) => return Ok(Err(not)),
    };
    db::supply::mark_preorder(conn, h.reservation_id).await?;
    let levels = db::levels::lock_at(conn, h.location_id, &skus).await?;
    let safety = db::supply::safety_stock(conn, h.location_id).await?;
    let open = db::supply::lock_open_at(conn, h.location_id, &skus).await?;

    let mut short = Vec::new();
    let (mut line_skus, mut held, mut waiting) = (Vec::new(), Vec::new(), Vec::new());
    let (mut a_skus, mut a_ids, mut a_q) = (Vec::new(), Vec::new(), Vec::new());
    for l in h.lines {
        let avail = levels
            .iter()
            .find(|v| v.sku == l.sku)
            .map_or(0, |v| available(v.on_hand, v.reserved, safety));
        let lines: Vec<&SupplyRow> = open.iter().filter(|o| o.sku == l.sku).collect();
        let free: Vec<i64> = lines.iter().map(|o| state(o).free()).collect();
        // A channel shares out what will be there (stock now and free supply) as it shares
        // stock: a preorder for it takes no more than its share of both.
        let pooled = channel.as_ref().map(|c| {
            let all = free.iter().fold(avail.max(0), |t, f| t.saturating_add(*f));
            c.available(&l.sku, all)
        });
        if let Some(cap) = pooled.filter(|cap| l.quantity > *cap) {
            short.push(Shortfall {
                sku: l.sku.clone(),
                requested: l.quantity,
                available: cap,
            });
            continue;
        }
        match rules::spread(l.quantity, avail, &free) {
            Err(capacity) => short.push(Shortfall {
                sku: l.sku.clone(),
                requested: l.quantity,
                available: capacity,
            }),
            Ok(s) => {
                for (o, n) in lines.iter().zip(&s.on_supply).filter(|(_, n)| **n > 0) {
                    a_skus.push(l.sku.as_str());
                    a_ids.push(o.supply_id.as_str());
                    a_q.push(*n);
                }
                line_skus.push(l.sku.as_str());
                held.push(s.from_stock);
                waiting.push(l.quantity - s.from_stock);
            }
        }
    }
    if !short.is_empty() {
        return Ok(Err(NotHeld::Short(short)));
    }
    db::supply::insert_preorder_lines(conn, h.reservation_id, &line_skus, &held, &waiting).await?;
    if !a_ids.is_empty() {
        db::supply::allocate(conn, h.reservation_id, &a_skus, &a_ids, &a_q).await?;
    }
    let (mut r_skus, mut r_q) = (Vec::new(), Vec::new());
    for (s, q) in line_skus.iter().zip(&held).filter(|(_, q)| **q > 0) {
        r_skus.push(*s);
        r_q.push(*q);
    }
    let mut changed = Vec::new();
    let mut evs = Vec::new();
    if !r_skus.is_empty() {
        let locs = vec![h.location_id; r_skus.len()];
        changed = db::reservations::add_reserved(conn, &locs, &r_skus, &r_q).await?;
        for a in &changed {
            let d = r_skus
                .iter()
                .zip(&r_q)
                .find(|(s, _)| **s == a.sku)
                .map_or(0, |(_, q)| *q);
            let mut b = a.clone();
            b.reserved -= d;
            evs.push(change(
                &b,
                a,
                "reservation_hold",
                Some(h.reservation_id.to_owned()),
            ));
        }
    }
    Ok(Ok(Held {
        changed,
        events: evs,
    }))
}
