use std::collections::BTreeMap;

use sqlx::{FromRow, PgConnection};

use crate::domain::transfer::TransferLine;

/// Transfer lines keyed by (transfer id, SKU).
pub type Lines = BTreeMap<(String, String), TransferLine>;

#[derive(FromRow)]
struct TransferRow {
    transfer_id: String,
    sku: String,
    from_location_id: Option<String>,
    to_location_id: Option<String>,
    shipped: i64,
    received: i64,
    accounted_to: Option<String>,
    accounted: i64,
}

/// Creates missing transfer lines and locks all of them, in (transfer, SKU) order.
pub async fn lock(
    conn: &mut PgConnection,
    ids: &[&str],
    skus: &[&str],
) -> Result<Lines, sqlx::Error> {
    sqlx::query(
        "INSERT INTO transfers (transfer_id, sku)
         SELECT t, s FROM UNNEST($1::text[], $2::text[]) AS n(t, s) ORDER BY t, s
         ON CONFLICT (transfer_id, sku) DO NOTHING",
    )
    .bind(ids)
    .bind(skus)
    .execute(&mut *conn)
    .await?;
    let rows: Vec<TransferRow> = sqlx::query_as(
        "SELECT transfer_id, sku, from_location_id, to_location_id, shipped, received,
                accounted_to, accounted
         FROM transfers
         WHERE (transfer_id, sku) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
         ORDER BY transfer_id, sku FOR UPDATE",
    )
    .bind(ids)
    .bind(skus)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let line = TransferLine {
                from_location_id: r.from_location_id,
                to_location_id: r.to_location_id,
                shipped: r.shipped,
                received: r.received,
                accounted_to: r.accounted_to,
                accounted: r.accounted,
            };
            ((r.transfer_id, r.sku), line)
        })
        .collect())
}

pub async fn save(conn: &mut PgConnection, lines: &Lines) -> Result<(), sqlx::Error> {
    macro_rules! column {
        ($f:ident) => {
            lines.values().map(|l| l.$f.clone()).collect::<Vec<_>>()
        };
    }
    let ids: Vec<&str> = lines.keys().map(|k| k.0.as_str()).collect();
    let skus: Vec<&str> = lines.keys().map(|k| k.1.as_str()).collect();
    sqlx::query(
        "UPDATE transfers AS t SET from_location_id = n.f, to_location_id = n.d, shipped = n.s,
                received = n.r, accounted_to = n.a, accounted = n.q, updated_at = now()
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[],
                     $7::text[], $8::int8[]) AS n(id, sku, f, d, s, r, a, q)
         WHERE t.transfer_id = n.id AND t.sku = n.sku",
    )
    .bind(ids)
    .bind(skus)
    .bind(column!(from_location_id))
    .bind(column!(to_location_id))
    .bind(column!(shipped))
    .bind(column!(received))
    .bind(column!(accounted_to))
    .bind(column!(accounted))
    .execute(conn)
    .await
    .map(|_| ())
}
