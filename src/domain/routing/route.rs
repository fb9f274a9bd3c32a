//! The decision: gates each candidate, prefers one location with every line, else splits.

use super::super::geo::haversine_km;
use super::cover::{full_mask, has_bit, split};
use super::explain::{explain, gate, no_stock, round_km, stock, whole_lines, Row, Verdict};
use super::quantity;
use super::{
    Assignment, Candidate, Fulfilment, OrderLine, RouteOutcome, RouteRequest, MAX_ALTERNATIVES,
};

/// Decides which location(s) fulfil the order; see the module docs for the rules.
///
/// Split search (delivery, `allow_split`, no single location has every line). Each usable
/// candidate gets a bitmask of the lines it can serve whole. Only the nearest candidate of each
/// distinct mask matters, and a candidate whose mask is a subset of a nearer one's is dominated
/// (swapping it for the nearer one never adds a shipment nor distance), so the search runs over
/// at most `min(candidates, 2^lines - 1)` non-dominated *classes*, in distance order. A greedy
/// set cover (most uncovered lines, then nearest) gives an upper bound; then covers of 2 and 3
/// are searched exactly: every cover contains a class serving the line served by the fewest
/// classes, so the first member is enumerated over those only, the second over the classes
/// serving the rarest line still uncovered, and the third is the nearest class covering all that
/// remains (a table lookup for up to 12 lines, else a scan of the rarest remaining line's
/// classes). Enumeration is in distance order and stops once a lower bound exceeds the best
/// total. Cost: O(candidates x lines) for the masks, O(candidates x C) for the classes, then
/// at most O(C^2) lookups for C classes (C <= 31 for 5 lines): table lookups up to 12 lines
/// (building the table is O(lines x 2^lines)); beyond, each lookup scans up to C classes, capped
/// by a probe budget. Beyond 3 shipments the greedy cover (O(shipments x C)) is used.
///
/// Pickup at a requested location: `max_distance_km` and capacity apply to it as to any other;
/// the alternatives offered are what a pickup without a requested location could choose
/// (pickup-enabled stores within `max_distance_km`, with capacity and every line), and they are
/// marked "could serve the order" in the explanation. `pickup_location_id` is ignored for a
/// delivery. Empty `lines` are not expected (the caller validates); they would be served by the
/// nearest usable location with no lines.
pub fn route(req: &RouteRequest<'_>, candidates: &[Candidate]) -> RouteOutcome {
    let lines = req.lines;
    let n = lines.len();
    let words = n.div_ceil(64).max(1);
    let full = full_mask(n, words);

    let mut rows: Vec<Row<'_>> = candidates
        .iter()
        .enumerate()
        .map(|(input, cand)| {
            let dist = haversine_km(req.customer_lat, req.customer_lon, cand.lat, cand.lon);
            Row {
                input,
                cand,
                dist,
                gate: gate(req, cand, dist),
            }
        })
        .collect();
    // Ties on id (duplicate ids are a caller bug) keep their input order.
    rows.sort_unstable_by(|a, b| {
        a.dist
            .total_cmp(&b.dist)
            .then_with(|| a.cand.location_id.cmp(&b.cand.location_id))
            .then(a.input.cmp(&b.input))
    });

    // Which lines each usable row can serve whole.
    let mut masks = vec![0u64; rows.len() * words];
    for (i, row) in rows.iter().enumerate() {
        if row.gate.is_none() {
            let mask = &mut masks[i * words..(i + 1) * words];
            for (l, line) in lines.iter().enumerate() {
                if stock(row.cand, &line.sku) >= line.quantity {
                    mask[l / 64] |= 1 << (l % 64);
                }
            }
        }
    }
    let mask_of = |i: usize| &masks[i * words..(i + 1) * words];
    let usable = |i: usize| rows[i].gate.is_none();
    let has_every_line = |i: usize| usable(i) && mask_of(i) == full.as_slice();

    let mut verdicts: Vec<Verdict> = rows
        .iter()
        .map(|r| r.gate.map_or(Verdict::Pending, Verdict::Skip))
        .collect();
    // Chosen rows (indices into `rows`) with the (line, quantity) each ships, nearest first.
    let mut chosen: Vec<(usize, Vec<(usize, i64)>)> = Vec::new();
    let mut alternatives = Vec::new();

    match (req.fulfilment, req.pickup_location_id) {
        (Fulfilment::Pickup, Some(requested)) => {
            let target = rows.iter().position(|r| r.cand.location_id == requested);
            match target {
                Some(t) if has_every_line(t) => {
                    verdicts[t] = Verdict::RequestedWithEverything;
                    chosen.push((t, whole_lines(lines)));
                }
                _ => {
                    if let Some(t) = target.filter(|&t| usable(t)) {
                        verdicts[t] = no_stock(rows[t].cand, lines, None);
                    }
                    alternatives = (0..rows.len())
                        .filter(|&i| Some(i) != target && has_every_line(i))
                        .take(MAX_ALTERNATIVES)
                        .collect();
                }
            }
            for (i, v) in verdicts.iter_mut().enumerate() {
                if Some(i) != target {
                    *v = Verdict::NotRequested {
                        alternative: alternatives.contains(&i),
                    };
                }
            }
        }
        (fulfilment, _) => {
            if let Some(s) = (0..rows.len()).find(|&i| has_every_line(i)) {
                for i in (0..rows.len()).filter(|&i| usable(i)) {
                    verdicts[i] = if i == s {
                        Verdict::NearestWithEverything
                    } else if has_every_line(i) {
                        Verdict::NearerHasEverything
                    } else {
                        no_stock(rows[i].cand, lines, None)
                    };
                }
                chosen.push((s, whole_lines(lines)));
            } else if fulfilment == Fulfilment::Delivery && req.allow_split {
                let usable_rows: Vec<usize> = (0..rows.len()).filter(|&i| usable(i)).collect();
                let dists: Vec<f64> = rows.iter().map(|r| r.dist).collect();
                let problem = quantity::Problem::new(
                    lines.iter().map(|l| l.quantity).collect(),
                    usable_rows.iter().map(|&i| dists[i]).collect(),
                    &usable_rows
                        .iter()
                        .flat_map(|&i| {
                            let cand = rows[i].cand;
                            lines.iter().map(move |l| stock(cand, &l.sku))
                        })
                        .collect::<Vec<i64>>(),
                );
                if problem.splits() {
                    match quantity::search(&problem) {
                        Some(members) => {
                            for (m, given) in quantity::allocate(&problem, &members) {
                                chosen.push((usable_rows[m], given));
                            }
                            for (k, &i) in usable_rows.iter().enumerate() {
                                verdicts[i] =
                                    if let Some(s) = chosen.iter().position(|(r, _)| *r == i) {
                                        Verdict::Ships(s)
                                    } else if problem.gives_any(k) {
                                        Verdict::CoveredOtherwise
                                    } else {
                                        no_stock(rows[i].cand, lines, None)
                                    };
                            }
                        }
                        None => {
                            let short = quantity::short_lines(&problem);
                            let total = |l: usize| {
                                usable_rows.iter().fold(0i64, |t, &i| {
                                    t.saturating_add(stock(rows[i].cand, &lines[l].sku).max(0))
                                })
                            };
                            for &i in &usable_rows {
                                verdicts[i] = match short.iter().find(|&&l| {
                                    stock(rows[i].cand, &lines[l].sku) < lines[l].quantity
                                }) {
                                    Some(&line) => Verdict::ShortInAll {
                                        line,
                                        total: total(line),
                                    },
                                    None => no_stock(rows[i].cand, lines, None),
                                };
                            }
                        }
                    }
                } else {
                    match split(&dists, &masks, &usable_rows, n, words) {
                        Ok(members) => {
                            for (l, line) in lines.iter().enumerate() {
                                // Nearest chosen location serving the line (members are nearest first).
                                if let Some(&m) = members.iter().find(|&&m| has_bit(mask_of(m), l))
                                {
                                    let given = (l, line.quantity);
                                    match chosen.iter_mut().find(|(row, _)| *row == m) {
                                        Some((_, ls)) => ls.push(given),
                                        None => chosen.push((m, vec![given])),
                                    }
                                }
                            }
                            chosen.sort_by_key(|(row, _)| *row);
                            for &i in &usable_rows {
                                verdicts[i] =
                                    if let Some(k) = chosen.iter().position(|(r, _)| *r == i) {
                                        Verdict::Ships(k)
                                    } else if mask_of(i).iter().any(|&w| w != 0) {
                                        Verdict::CoveredOtherwise
                                    } else {
                                        no_stock(rows[i].cand, lines, None)
                                    };
                            }
                        }
                        Err(uncovered) => {
                            for &i in &usable_rows {
                                verdicts[i] = no_stock(rows[i].cand, lines, Some(&uncovered));
                            }
                        }
                    }
                }
            } else {
                for i in (0..rows.len()).filter(|&i| usable(i)) {
                    verdicts[i] = no_stock(rows[i].cand, lines, None);
                }
            }
        }
    }

    let assignments: Vec<Assignment> = chosen
        .iter()
        .map(|(i, ls)| Assignment {
            location_id: rows[*i].cand.location_id.clone(),
            distance_km: round_km(rows[*i].dist),
            lines: ls
                .iter()
                .map(|&(l, quantity)| OrderLine {
                    sku: lines[l].sku.clone(),
                    quantity,
                })
                .collect(),
        })
        .collect();
    let max_km = req.max_distance_km.map(|max| max.to_string());
    let explanation = rows
        .iter()
        .zip(&verdicts)
        .map(|(row, verdict)| explain(row, *verdict, max_km.as_deref(), lines, &assignments))
        .collect();
    let alternatives = alternatives
        .into_iter()
        .map(|i| (rows[i].cand.location_id.clone(), round_km(rows[i].dist)))
        .collect();
    RouteOutcome {
        assignments,
        explanation,
        alternatives,
    }
}
