//! The stock the acceptance rules read (`rules.stock_relation`, a table or a view) and the
//! reservations (`stock_reservations`) that keep replicas from promising the same units twice.

use std::collections::HashMap;
use std::time::Duration;

use rust_decimal::Decimal;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

/// The stock relation cannot be used: named in every message, with what to do.
#[derive(Debug, thiserror::Error)]
pub enum StockRelationError {
    #[error(
        "the stock relation {relation} (rules.stock_relation) does not exist. Run `order-acceptance migrate` (it creates acceptance_stock), create a table or view of that name (docs/CONFIGURATION.md shows one), set rules.stock_relation to the right name, or turn the rules off (rules.enabled = false)"
    )]
    Missing { relation: String },
    #[error(
        "the stock relation {relation} (rules.stock_relation) has no column {columns}. It needs sku (text) and available (integer); min_price (numeric) and backorder (boolean) are optional. Add the columns (or alias them in the view), or name another relation"
    )]
    MissingColumns { relation: String, columns: String },
    #[error(
        "the stock relation {relation} (rules.stock_relation) has columns of the wrong type: {columns}. sku must be text, available a whole number, min_price a number and backorder a boolean; cast them in the view, or name another relation"
    )]
    WrongTypes { relation: String, columns: String },
    #[error(
        "cannot inspect the stock relation {relation} (rules.stock_relation): {source}. Check that PostgreSQL is reachable and that the database user may read the relation"
    )]
    Database {
        relation: String,
        source: sqlx::Error,
    },
}

/// The optional columns the stock relation has; a missing one reads as no floor / no backorder.
#[derive(Debug, Clone, Copy)]
pub struct StockColumns {
    pub min_price: bool,
    pub backorder: bool,
}

/// One usable stock row.
#[derive(Debug, Clone, PartialEq)]
pub struct StockRow {
    pub available: i64,
    /// Tax included.
    pub min_price: Option<Decimal>,
    pub backorder: bool,
}

/// Checks that the stock relation exists with `sku` and `available`, and finds its optional
/// columns. Run at start-up, by `check`, and at the start of each run with rules on.
pub async fn inspect_stock_relation(
    pool: &PgPool,
    relation: &str,
) -> Result<StockColumns, StockRelationError> {
    let database = |source| StockRelationError::Database {
        relation: relation.to_string(),
        source,
    };
    // Each column with its type's category (pg_type.typcategory: S string, N numeric, B boolean).
    let columns: Option<Vec<String>> = sqlx::query_scalar(
        r#"
        SELECT array(SELECT a.attname::text || ':' || t.typcategory::text
                     FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                     WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped)
        FROM to_regclass($1) AS rel
        WHERE rel IS NOT NULL
        "#,
    )
    .bind(relation)
    .fetch_optional(pool)
    .await
    .map_err(database)?;
    let Some(columns) = columns else {
        return Err(StockRelationError::Missing {
            relation: relation.to_string(),
        });
    };
    let category = |name: &str| {
        columns
            .iter()
            .filter_map(|column| column.rsplit_once(':'))
            .find(|(column, _)| *column == name)
            .map(|(_, category)| category)
    };
    let has = |name: &str| category(name).is_some();
    let missing: Vec<&str> = ["sku", "available"]
        .into_iter()
        .filter(|name| !has(name))
        .collect();
    if !missing.is_empty() {
        return Err(StockRelationError::MissingColumns {
            relation: relation.to_string(),
            columns: missing.join(", "),
        });
    }
    let wrong: Vec<&str> = [
        ("sku", "S"),
        ("available", "N"),
        ("min_price", "N"),
        ("backorder", "B"),
    ]
    .into_iter()
    .filter(|(name, wanted)| category(name).is_some_and(|found| found != *wanted))
    .map(|(name, _)| name)
    .collect();
    if !wrong.is_empty() {
        return Err(StockRelationError::WrongTypes {
            relation: relation.to_string(),
            columns: wrong.join(", "),
        });
    }
    Ok(StockColumns {
        min_price: has("min_price"),
        backorder: has("backorder"),
    })
}

/// Rows the rules ignore: a NULL sku, or a NULL or negative `available`. Reads the whole
/// relation, so it runs once per run.
pub async fn count_unusable_rows(pool: &PgPool, relation: &str) -> Result<i64, sqlx::Error> {
    // `relation` is checked to be plain identifiers when the configuration loads.
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {relation} WHERE sku IS NULL OR available IS NULL OR available < 0"
    )))
    .fetch_one(pool)
    .await
}

/// The stock SKUs `shop` maps these line SKUs to (`offer_sku_map`), by line SKU; a line SKU
/// without a row is absent.
pub async fn mapped_skus(
    conn: &mut PgConnection,
    shop: &str,
    line_skus: &[&str],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT offer_sku, sku FROM offer_sku_map WHERE shop = $1 AND offer_sku = ANY($2::text[])",
    )
    .bind(shop)
    .bind(line_skus)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Serialises the deciding of these SKUs across replicas until the transaction ends (see the
/// migration's `acceptance_lock_skus` for why advisory locks in ascending key order).
pub async fn lock_skus(conn: &mut PgConnection, skus: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT acceptance_lock_skus($1)")
        .bind(skus)
        .execute(conn)
        .await?;
    Ok(())
}

/// The usable stock rows of these SKUs. When a view yields a SKU twice, the row with the least
/// available wins: promising less is the safe mistake.
pub async fn stock_of(
    conn: &mut PgConnection,
    relation: &str,
    columns: StockColumns,
    skus: &[&str],
) -> Result<HashMap<String, StockRow>, sqlx::Error> {
    // A floor must decode as a decimal: one past 1e20 (or NaN, or Infinity) still holds every
    // price below it, capped rather than dropped; a negative one is no floor.
    let min_price = if columns.min_price {
        "round(CASE WHEN min_price::numeric > 1e20 THEN 1e20 WHEN min_price::numeric < 0 THEN 0 ELSE min_price::numeric END, 10)"
    } else {
        "NULL"
    };
    let backorder = if columns.backorder {
        "coalesce(backorder, false)"
    } else {
        "false"
    };
    // `relation` is checked to be plain identifiers when the configuration loads.
    let rows: Vec<(String, i64, Option<Decimal>, bool)> = sqlx::query_as(AssertSqlSafe(format!(
        r#"
        SELECT DISTINCT ON (sku::text) sku::text, available::bigint, {min_price}::numeric,
               {backorder}::bool
        FROM {relation}
        WHERE sku::text = ANY($1::text[]) AND available >= 0
        ORDER BY sku::text, available
        "#
    )))
    .bind(skus)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(sku, available, min_price, backorder)| {
            let row = StockRow {
                available,
                // Rounding to 10 places pads the scale; the floor keeps the digits it was given.
                min_price: min_price.map(|price| price.normalize()),
                backorder,
            };
            (sku, row)
        })
        .collect())
}

/// Units held by open reservations of these SKUs, in every shop: one stock, one pool. Not
/// counting those of `except_orders` of `shop` (the orders being decided, whose own reservations
/// are reused or released) nor those older than `ttl`.
pub async fn reserved_units(
    conn: &mut PgConnection,
    shop: &str,
    skus: &[&str],
    except_orders: &[&str],
    ttl: Option<Duration>,
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        r#"
        SELECT sku, sum(quantity)::bigint
        FROM stock_reservations
        WHERE released_at IS NULL AND sku = ANY($1::text[])
          AND NOT (shop = $4 AND order_id = ANY($2::text[]))
          AND ($3::float8 IS NULL OR created_at > now() - make_interval(secs => $3))
        GROUP BY sku
        "#,
    )
    .bind(skus)
    .bind(except_orders)
    .bind(ttl.map(|ttl| ttl.as_secs_f64()))
    .bind(shop)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// A line's claim on stock.
#[derive(Debug, Clone)]
pub struct Reservation<'a> {
    pub order_id: &'a str,
    pub order_line_id: &'a str,
    pub sku: &'a str,
    pub quantity: i32,
}

/// Reserves stock for accepted lines; a line that already holds an open reservation (its earlier
/// claim died before OR21) keeps that one, so nothing is reserved twice. The kept reservation is
/// renewed (its time, SKU and quantity those of this decision), so `rules.reservation_ttl`
/// counts from the latest claim, not the first.
pub async fn reserve(
    conn: &mut PgConnection,
    shop: &str,
    reservations: &[Reservation<'_>],
) -> Result<(), sqlx::Error> {
    if reservations.is_empty() {
        return Ok(());
    }
    let orders: Vec<&str> = reservations.iter().map(|r| r.order_id).collect();
    let lines: Vec<&str> = reservations.iter().map(|r| r.order_line_id).collect();
    let skus: Vec<&str> = reservations.iter().map(|r| r.sku).collect();
    let quantities: Vec<i32> = reservations.iter().map(|r| r.quantity).collect();
    sqlx::query(
        r#"
        INSERT INTO stock_reservations (shop, order_id, order_line_id, sku, quantity)
        SELECT $5, * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[])
        ON CONFLICT (shop, order_id, order_line_id) WHERE released_at IS NULL DO UPDATE
            SET created_at = now(), sku = EXCLUDED.sku, quantity = EXCLUDED.quantity
        "#,
    )
    .bind(&orders)
    .bind(&lines)
    .bind(&skus)
    .bind(&quantities)
    .bind(shop)
    .execute(conn)
    .await?;
    Ok(())
}

/// Releases the open reservations of these lines (order, line, reason), e.g. a line an earlier
/// claim reserved and this one refuses or sends to review.
pub async fn release_lines(
    conn: &mut PgConnection,
    shop: &str,
    lines: &[(&str, &str, &str)],
) -> Result<(), sqlx::Error> {
    if lines.is_empty() {
        return Ok(());
    }
    let orders: Vec<&str> = lines.iter().map(|(order, ..)| *order).collect();
    let ids: Vec<&str> = lines.iter().map(|(_, line, _)| *line).collect();
    let reasons: Vec<&str> = lines.iter().map(|(.., reason)| *reason).collect();
    sqlx::query(
        r#"
        UPDATE stock_reservations r
        SET released_at = now(), release_reason = x.reason
        FROM unnest($1::text[], $2::text[], $3::text[]) AS x(order_id, order_line_id, reason)
        WHERE r.shop = $4 AND r.order_id = x.order_id AND r.order_line_id = x.order_line_id
          AND r.released_at IS NULL
        "#,
    )
    .bind(&orders)
    .bind(&ids)
    .bind(&reasons)
    .bind(shop)
    .execute(conn)
    .await?;
    Ok(())
}

/// Releases every open reservation of these orders (order, reason): they ended refused or
/// cancelled, or their OR21 certainly failed.
pub async fn release_orders(
    conn: &mut PgConnection,
    shop: &str,
    orders: &[(&str, &str)],
) -> Result<(), sqlx::Error> {
    if orders.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = orders.iter().map(|(order, _)| *order).collect();
    let reasons: Vec<&str> = orders.iter().map(|(_, reason)| *reason).collect();
    sqlx::query(
        r#"
        UPDATE stock_reservations r
        SET released_at = now(), release_reason = x.reason
        FROM unnest($1::text[], $2::text[]) AS x(order_id, reason)
        WHERE r.shop = $3 AND r.order_id = x.order_id AND r.released_at IS NULL
        "#,
    )
    .bind(&ids)
    .bind(&reasons)
    .bind(shop)
    .execute(conn)
    .await?;
    Ok(())
}
