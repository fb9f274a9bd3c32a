//! The report as `omnistock reconcile` prints it.

use std::fmt;

use super::{CapacityFindings, RedisFindings, Report};
use crate::db::invariants::CapacityDifference;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at_least = |capped: bool| if capped { "at least " } else { "" };
        if self.ledger.count == 0 {
            writeln!(
                f,
                "ledger:   ok, every level's on_hand equals what its ledger implies"
            )?;
        } else {
            writeln!(
                f,
                "ledger:   {}{} level(s) differ from what their ledger implies. PostgreSQL is not \
                 repaired: find the cause (a hand edit? a bug?) before correcting a level, e.g. \
                 with a count movement.",
                at_least(self.ledger.capped),
                self.ledger.count
            )?;
            for m in &self.ledger.examples {
                writeln!(
                    f,
                    "  {} {:?}: on_hand {}, the ledger implies {}",
                    m.location_id, m.sku, m.on_hand, m.implied
                )?;
            }
        }
        if self.in_transit.count != 0 {
            writeln!(
                f,
                "in_transit: {}{} level(s) differ from their open transfers. PostgreSQL is not repaired.",
                at_least(self.in_transit.capped),
                self.in_transit.count
            )?;
            for m in &self.in_transit.examples {
                writeln!(
                    f,
                    "  {} {:?}: in_transit {}, open transfers {}",
                    m.location_id, m.sku, m.in_transit, m.accounted
                )?;
            }
        }
        if self.reserved.count == 0 {
            writeln!(
                f,
                "reserved: ok, every level's reserved equals its live holds"
            )?;
        } else {
            writeln!(
                f,
                "reserved: {}{} level(s) differ from their live holds. PostgreSQL is not repaired.",
                at_least(self.reserved.capped),
                self.reserved.count
            )?;
            for m in &self.reserved.examples {
                writeln!(
                    f,
                    "  {} {:?}: reserved {}, live holds {}",
                    m.location_id, m.sku, m.reserved, m.held
                )?;
            }
        }
        fmt_capacity(f, &self.capacity)?;
        fmt_redis(f, &self.redis, self.repair)?;
        write!(f, "{}", self.totals.display(self.repair))?;
        writeln!(f, "took {:.2} s", self.duration_seconds)
    }
}

fn fmt_redis(f: &mut fmt::Formatter<'_>, r: &RedisFindings, repair: bool) -> fmt::Result {
    write!(
        f,
        "redis:    {} SKUs checked: {} stale, {} mismatched, {} without a complete entry \
         (reads fall back to PostgreSQL)",
        r.checked_skus, r.stale, r.mismatched, r.missing
    )?;
    match (r.stale + r.mismatched, repair) {
        (0, _) => writeln!(f, "; ok")?,
        (_, true) => writeln!(f, "; {} repaired from PostgreSQL", r.repaired)?,
        (_, false) => writeln!(f, "; not repaired (--no-repair)")?,
    }
    let examples = [
        ("stale", &r.stale_examples),
        ("mismatched", &r.mismatched_examples),
    ];
    for (kind, list) in examples {
        for d in list.iter() {
            let pg = match d.postgres {
                Some(p) => format!(
                    "v{} on_hand {} reserved {} in_transit {}",
                    p.version, p.on_hand, p.reserved, p.in_transit
                ),
                None => "no level".to_owned(),
            };
            let redis = d
                .redis
                .as_deref()
                .map_or("absent".to_owned(), |v| format!("{v:?}"));
            writeln!(
                f,
                "  {kind:<10} {} {:?}: PostgreSQL {pg}, Redis {redis}",
                d.location_id, d.sku
            )?;
        }
    }
    Ok(())
}

fn fmt_capacity(f: &mut fmt::Formatter<'_>, c: &CapacityFindings) -> fmt::Result {
    if c.is_clean() {
        return writeln!(
            f,
            "capacity: ok, today's and yesterday's order counters equal the orders assigned"
        );
    }
    if !c.exceeded.is_empty() {
        writeln!(
            f,
            "capacity: {} location day(s) assigned more orders than they counted: their daily \
             capacity could be exceeded. PostgreSQL is not repaired.",
            c.exceeded_days
        )?;
        fmt_days(f, &c.exceeded)?;
    }
    if !c.leaked.is_empty() {
        writeln!(
            f,
            "capacity: {} slot(s) counted without an order (a route stopped between taking its \
             slot and committing): that day's capacity is under-used. Not repaired; the counter \
             starts again the next day.",
            c.leaked_slots
        )?;
        fmt_days(f, &c.leaked)?;
    }
    Ok(())
}

fn fmt_days(f: &mut fmt::Formatter<'_>, days: &[CapacityDifference]) -> fmt::Result {
    for d in days {
        writeln!(
            f,
            "  {} {}: {} counted, {} assigned",
            d.location_id, d.local_date, d.counted, d.assigned
        )?;
    }
    Ok(())
}
