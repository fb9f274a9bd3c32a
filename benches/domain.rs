//! Benchmarks of the pure domain rules (no IO): decoding and validating a batch message, and
//! applying movements with counts and late deltas. Run: `cargo bench --bench domain`.

use chrono::{Duration, TimeZone, Utc};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use omnistock::domain::level::{apply, LevelFacts, MovementFact};
use omnistock::domain::movement::{decode_message, MovementKind};
use serde_json::json;

fn decode(c: &mut Criterion) {
    let now = Utc::now();
    let batch: Vec<_> = (0..500)
        .map(|i| {
            json!({
                "event_id": format!("pos-TW001-20261123-{i:06}"), "location_id": "TW001",
                "sku": format!("TEE-{:03}-RED-M", i % 200), "kind": "sale", "quantity": 1 + i % 3,
                "occurred_at": "2026-11-23T10:00:00+08:00", "source": "pos", "reference": "receipt-8812",
            })
        })
        .collect();
    let body = serde_json::to_vec(&batch).expect("json");
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(500));
    g.bench_function("batch_of_500", |b| {
        b.iter(|| {
            let d = decode_message("TW001", black_box(&body), now);
            assert_eq!(d.movements.len(), 500);
            d
        })
    });
    g.finish();
}

fn apply_rules(c: &mut Criterion) {
    let t0 = Utc
        .with_ymd_and_hms(2026, 11, 23, 0, 0, 0)
        .single()
        .expect("t0");
    let kinds = [
        MovementKind::Receipt,
        MovementKind::Sale,
        MovementKind::Sale,
        MovementKind::Return,
        MovementKind::Count,
    ];
    // Every fifth movement a count, times shuffled a little so some deltas are late.
    let movements: Vec<MovementFact> = (0..1000)
        .map(|i: i64| MovementFact {
            kind: kinds[(i % 5) as usize],
            quantity: 1 + i % 4,
            occurred_at: t0 + Duration::seconds(i * 10 - (i % 7) * 15),
        })
        .collect();
    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(movements.len() as u64));
    g.bench_function("1000_movements_one_level", |b| {
        b.iter(|| {
            let mut level = LevelFacts::default();
            let mut recorded = Vec::new();
            for m in &movements {
                let _ = black_box(apply(&mut level, &mut recorded, *m));
            }
            level
        })
    });
    g.finish();
}

criterion_group!(benches, decode, apply_rules);
criterion_main!(benches);
