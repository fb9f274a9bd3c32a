use sqlx::{FromRow, PgConnection};

#[derive(Debug, Clone, FromRow)]
pub struct TransferRow {
    pub transfer_id: String,
    pub sku: String,
    pub from_location_id: Option<String>,
    pub to_location_id: Option<String>,
    pub shipped: i64,
    pub received: i64,
    pub accounted_to: Option<String>,
    pub accounted: i64,
}

/// Creates missing transfer lines and locks all of them, in (transfer, SKU) order.
pub async fn lock(
    conn: &mut PgConnection,
    ids: &[&str],
    skus: &[&str],
) -> Result<Vec<TransferRow>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO transfers (transfer_id, sku)
         SELECT t, s FROM UNNEST($1::text[], $2::text[]) AS n(t, s) ORDER BY t, s
         ON CONFLICT (transfer_id, sku) DO NOTHING",
    )
    .bind(ids)
    .bind(skus)
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(
        "SELECT transfer_id, sku, from_location_id, to_location_id, shipped, received,
                accounted_to, accounted
         FROM transfers
         WHERE (transfer_id, sku) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
         ORDER BY transfer_id, sku FOR UPDATE",
    )
    .bind(ids)
    .bind(skus)
    .fetch_all(conn)
    .await
}

pub async fn save(conn: &mut PgConnection, rows: &[TransferRow]) -> Result<(), sqlx::Error> {
    macro_rules! column {
        ($f:ident) => {
            rows.iter().map(|r| r.$f.clone()).collect::<Vec<_>>()
        };
    }
    sqlx::query(
        "UPDATE transfers AS t SET from_location_id = n.f, to_location_id = n.d, shipped = n.s,
                received = n.r, accounted_to = n.a, accounted = n.q, updated_at = now()
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[],
                     $7::text[], $8::int8[]) AS n(id, sku, f, d, s, r, a, q)
         WHERE t.transfer_id = n.id AND t.sku = n.sku",
    )
    .bind(column!(transfer_id))
    .bind(column!(sku))
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
