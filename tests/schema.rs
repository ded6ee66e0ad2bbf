//! The schema against real PostgreSQL: the status projection, append-only history, repeatable
//! migrations, and adoption of the earlier Python workflow's database.

use order_acceptance::db::MIGRATOR;
use sqlx::{PgPool, Row};

async fn insert_order(pool: &PgPool, order_id: &str) {
    sqlx::query("INSERT INTO orders (order_id, raw_order_data) VALUES ($1, '{}')")
        .bind(order_id)
        .execute(pool)
        .await
        .expect("insert order");
}

async fn insert_status(pool: &PgPool, order_id: &str, status: &str, at: &str) {
    sqlx::query(
        "INSERT INTO order_status_history (order_id, status, \"timestamp\") VALUES ($1, $2, $3::timestamptz)",
    )
    .bind(order_id)
    .bind(status)
    .bind(at)
    .execute(pool)
    .await
    .expect("insert history");
}

/// Orders whose projection differs from the latest history row, computed the slow way.
async fn projection_mismatches(pool: &PgPool) -> Vec<(String, Option<String>, Option<String>)> {
    sqlx::query_as(
        r#"
        WITH latest AS (
            SELECT DISTINCT ON (order_id) order_id, history_id, status
            FROM order_status_history
            ORDER BY order_id, "timestamp" DESC, history_id DESC
        )
        SELECT coalesce(l.order_id, c.order_id), l.status, c.status
        FROM latest l
        FULL JOIN order_current_status c ON c.order_id = l.order_id
        WHERE l.history_id IS DISTINCT FROM c.history_id
        "#,
    )
    .fetch_all(pool)
    .await
    .expect("compare projection")
}

async fn current_status(pool: &PgPool, order_id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM order_current_status WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(pool)
        .await
        .expect("projection row")
}

#[sqlx::test]
async fn projection_follows_in_order_inserts(pool: PgPool) {
    insert_order(&pool, "A").await;
    insert_status(&pool, "A", "pending_acceptance", "2026-01-01T10:00:00Z").await;
    assert_eq!(current_status(&pool, "A").await, "pending_acceptance");
    insert_status(&pool, "A", "accepting", "2026-01-01T10:01:00Z").await;
    insert_status(&pool, "A", "accepted", "2026-01-01T10:02:00Z").await;
    assert_eq!(current_status(&pool, "A").await, "accepted");
    assert!(projection_mismatches(&pool).await.is_empty());
}

#[sqlx::test]
async fn an_older_row_inserted_later_never_rewinds_the_projection(pool: PgPool) {
    insert_order(&pool, "A").await;
    insert_status(&pool, "A", "accepted", "2026-01-01T10:02:00Z").await;
    insert_status(&pool, "A", "pending_acceptance", "2026-01-01T10:00:00Z").await;
    assert_eq!(current_status(&pool, "A").await, "accepted");
    assert!(projection_mismatches(&pool).await.is_empty());
}

#[sqlx::test]
async fn rows_of_one_transaction_resolve_to_the_later_history_id(pool: PgPool) {
    insert_order(&pool, "A").await;
    let mut tx = pool.begin().await.expect("begin");
    for status in ["pending_acceptance", "accepting", "accepted"] {
        sqlx::query("INSERT INTO order_status_history (order_id, status) VALUES ('A', $1)")
            .bind(status)
            .execute(&mut *tx)
            .await
            .expect("insert");
    }
    tx.commit().await.expect("commit");
    assert_eq!(current_status(&pool, "A").await, "accepted");
    assert!(projection_mismatches(&pool).await.is_empty());
}

#[sqlx::test]
async fn rows_of_one_statement_resolve_per_order_to_the_latest(pool: PgPool) {
    insert_order(&pool, "A").await;
    insert_order(&pool, "B").await;
    sqlx::query(
        r#"INSERT INTO order_status_history (order_id, status, "timestamp") VALUES
           ('A', 'pending_acceptance', '2026-01-01T10:00:00Z'),
           ('B', 'accepted', '2026-01-01T10:05:00Z'),
           ('A', 'accepting', '2026-01-01T10:01:00Z'),
           ('B', 'pending_acceptance', '2026-01-01T10:00:00Z'),
           ('A', 'accepted', '2026-01-01T10:01:00Z')"#,
    )
    .execute(&pool)
    .await
    .expect("one statement");
    assert_eq!(
        current_status(&pool, "A").await,
        "accepted",
        "tie broken by history_id"
    );
    assert_eq!(
        current_status(&pool, "B").await,
        "accepted",
        "the older row came later"
    );
    assert!(projection_mismatches(&pool).await.is_empty());
}

#[sqlx::test]
async fn projection_matches_history_for_many_orders_in_random_order(pool: PgPool) {
    // 200 orders, 5 rows each, inserted with shuffled timestamps: some late, some tied.
    let statuses = [
        "pending_acceptance",
        "accepting",
        "acceptance_failed",
        "accepted",
        "shipped",
    ];
    sqlx::query(
        "INSERT INTO orders (order_id, raw_order_data) SELECT 'O' || n, '{}' FROM generate_series(1, 200) n",
    )
    .execute(&pool)
    .await
    .expect("orders");
    let mut rows = Vec::new();
    for order in 1..=200 {
        for (i, status) in statuses.iter().enumerate() {
            let minute = (order * 7 + i * 13) % 6; // collisions on purpose
            rows.push((
                format!("O{order}"),
                *status,
                format!("2026-01-01T10:0{minute}:00Z"),
            ));
        }
    }
    // Deterministic shuffle: rows of different orders and times interleave.
    rows.sort_by_key(|(order, status, at)| (at.clone(), status.len(), order.clone()));
    for (order, status, at) in &rows {
        insert_status(&pool, order, status, at).await;
    }
    assert!(projection_mismatches(&pool).await.is_empty());
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM order_current_status")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(count, 200);
}

#[sqlx::test]
async fn history_rows_cannot_be_updated(pool: PgPool) {
    insert_order(&pool, "A").await;
    insert_status(&pool, "A", "pending_acceptance", "2026-01-01T10:00:00Z").await;
    let err = sqlx::query("UPDATE order_status_history SET status = 'accepted'")
        .execute(&pool)
        .await
        .expect_err("append-only");
    assert!(err.to_string().contains("append-only"), "{err}");
    assert_eq!(current_status(&pool, "A").await, "pending_acceptance");
}

#[sqlx::test]
async fn deleting_an_order_cascades_to_its_history_and_projection(pool: PgPool) {
    insert_order(&pool, "A").await;
    insert_status(&pool, "A", "pending_acceptance", "2026-01-01T10:00:00Z").await;
    sqlx::query("DELETE FROM orders WHERE order_id = 'A'")
        .execute(&pool)
        .await
        .expect("delete");
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM order_status_history) + (SELECT count(*) FROM order_current_status)",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(left, 0);
}

#[sqlx::test]
async fn blank_statuses_are_rejected(pool: PgPool) {
    insert_order(&pool, "A").await;
    let err = sqlx::query("INSERT INTO order_status_history (order_id, status) VALUES ('A', ' ')")
        .execute(&pool)
        .await
        .expect_err("blank status");
    assert!(
        err.to_string()
            .contains("order_status_history_status_not_blank"),
        "{err}"
    );
}

#[sqlx::test]
async fn migrating_twice_is_a_no_op(pool: PgPool) {
    let before = schema_fingerprint(&pool).await;
    MIGRATOR.run(&pool).await.expect("second run");
    assert_eq!(schema_fingerprint(&pool).await, before);
}

/// Columns, indexes, triggers and constraints of the public schema, in a comparable form.
async fn schema_fingerprint(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        r#"
        SELECT table_name || '.' || column_name || ':' || data_type
        FROM information_schema.columns WHERE table_schema = 'public'
        UNION ALL SELECT 'index ' || indexname FROM pg_indexes WHERE schemaname = 'public'
        UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
        UNION ALL SELECT 'constraint ' || conname FROM pg_constraint
            WHERE connamespace = 'public'::regnamespace
        UNION ALL SELECT 'migration ' || version FROM _sqlx_migrations
        ORDER BY 1
        "#,
    )
    .fetch_all(pool)
    .await
    .expect("fingerprint")
}

/// The earlier Python workflow's tables, as sellers have them today.
const LEGACY_SCHEMA: &str = r#"
CREATE TABLE orders (
    order_id VARCHAR(64) PRIMARY KEY,
    raw_order_data JSONB
);
CREATE TABLE order_status_history (
    history_id SERIAL PRIMARY KEY,
    order_id VARCHAR(64),
    status VARCHAR(50),
    notes TEXT,
    timestamp TIMESTAMPTZ DEFAULT now()
);
CREATE TABLE api_calls (
    call_id SERIAL PRIMARY KEY,
    service VARCHAR(50),
    endpoint VARCHAR(50),
    related_id VARCHAR(64),
    request_payload JSONB,
    response_body TEXT,
    status_code INT,
    is_success BOOL,
    timestamp TIMESTAMPTZ DEFAULT now()
);
CREATE TABLE process_failures (
    failure_id SERIAL PRIMARY KEY,
    related_id VARCHAR(64),
    process_name VARCHAR(100),
    details TEXT,
    payload JSONB,
    timestamp TIMESTAMPTZ DEFAULT now()
);
"#;

/// 3,000 legacy orders: each pending, two thirds accepted later, every tenth shipped after
/// that, and one order with its history inserted out of time order.
async fn seed_legacy(pool: &PgPool) {
    sqlx::raw_sql(LEGACY_SCHEMA)
        .execute(pool)
        .await
        .expect("legacy schema");
    sqlx::raw_sql(
        r#"
        INSERT INTO orders (order_id, raw_order_data)
        SELECT 'L' || n, jsonb_build_object('order_id', 'L' || n,
               'created_date', (timestamptz '2025-06-01' + n * interval '1 minute')::text)
        FROM generate_series(1, 3000) n;
        INSERT INTO order_status_history (order_id, status, notes, timestamp)
        SELECT 'L' || n, 'pending_acceptance', 'imported', timestamptz '2025-06-01' + n * interval '1 minute'
        FROM generate_series(1, 3000) n;
        INSERT INTO order_status_history (order_id, status, notes, timestamp)
        SELECT 'L' || n, 'accepted', 'Validated', timestamptz '2025-06-02' + n * interval '1 minute'
        FROM generate_series(1, 3000) n WHERE n % 3 <> 0;
        INSERT INTO order_status_history (order_id, status, notes, timestamp)
        SELECT 'L' || n, 'shipped', NULL, timestamptz '2025-06-03' + n * interval '1 minute'
        FROM generate_series(1, 3000) n WHERE n % 10 = 1;
        INSERT INTO order_status_history (order_id, status, timestamp)
        VALUES ('L2', 'pending_acceptance', timestamptz '2025-05-01');
        INSERT INTO api_calls (service, endpoint, related_id, status_code, is_success)
        SELECT 'BestBuy', 'OR21', 'L' || n, 204, true FROM generate_series(1, 500) n;
        INSERT INTO process_failures (related_id, process_name, details)
        SELECT 'L' || n, 'OrderAcceptance', 'legacy failure' FROM generate_series(1, 20) n;
        "#,
    )
    .execute(pool)
    .await
    .expect("legacy data");
}

async fn count(pool: &PgPool, table: &'static str) -> i64 {
    // Table names come from this file only.
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .expect("count")
        .get(0)
}

/// Rows in each of the legacy tables.
async fn legacy_row_counts(pool: &PgPool) -> Vec<i64> {
    futures::future::join_all(
        [
            "orders",
            "order_status_history",
            "api_calls",
            "process_failures",
        ]
        .map(|table| count(pool, table)),
    )
    .await
}

#[sqlx::test(migrations = false)]
async fn migrate_adopts_a_legacy_database_keeping_every_row(pool: PgPool) {
    seed_legacy(&pool).await;
    let before = legacy_row_counts(&pool).await;

    MIGRATOR.run(&pool).await.expect("adopt");

    let after = legacy_row_counts(&pool).await;
    assert_eq!(before, after, "every legacy row kept");
    assert_eq!(count(&pool, "order_current_status").await, 3000);
    assert!(projection_mismatches(&pool).await.is_empty());
    assert_eq!(
        current_status(&pool, "L2").await,
        "accepted",
        "late old row ignored"
    );
    assert_eq!(current_status(&pool, "L3").await, "pending_acceptance");
    assert_eq!(current_status(&pool, "L11").await, "shipped");

    // The projection keeps working for new rows, and the claim order uses the creation date.
    insert_status(&pool, "L3", "accepting", "2026-01-01T00:00:00Z").await;
    assert_eq!(current_status(&pool, "L3").await, "accepting");
    let created: String = sqlx::query_scalar(
        "SELECT to_char(order_created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM order_current_status WHERE order_id = 'L3'",
    )
    .fetch_one(&pool)
    .await
    .expect("created");
    assert_eq!(created, "2025-06-01 00:03");

    // The new columns exist with their defaults on old rows.
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM process_failures WHERE resolved_at IS NULL AND NOT retryable",
    )
    .fetch_one(&pool)
    .await
    .expect("failures");
    assert_eq!(open, 20);

    let before = schema_fingerprint(&pool).await;
    MIGRATOR.run(&pool).await.expect("again");
    assert_eq!(
        schema_fingerprint(&pool).await,
        before,
        "second migrate is a no-op"
    );
}

#[sqlx::test(migrations = false)]
async fn a_half_applied_adoption_can_be_run_again(pool: PgPool) {
    seed_legacy(&pool).await;
    // As if an earlier attempt died after adding some columns and the projection table.
    sqlx::raw_sql(
        r#"
        ALTER TABLE orders ADD COLUMN placed_at timestamptz;
        ALTER TABLE process_failures ADD COLUMN resolved_at timestamptz;
        CREATE TABLE order_current_status (
            order_id text PRIMARY KEY REFERENCES orders (order_id) ON DELETE CASCADE,
            history_id bigint NOT NULL,
            status text NOT NULL,
            "timestamp" timestamptz NOT NULL,
            attempt integer NOT NULL DEFAULT 0,
            claimable_at timestamptz,
            order_created_at timestamptz NOT NULL
        );
        "#,
    )
    .execute(&pool)
    .await
    .expect("partial state");
    MIGRATOR.run(&pool).await.expect("adopt");
    assert_eq!(count(&pool, "order_current_status").await, 3000);
    assert!(projection_mismatches(&pool).await.is_empty());
}

#[sqlx::test]
async fn runs_may_end_degraded_and_the_migration_can_run_again(pool: PgPool) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(include_str!(
        "../migrations/20261201000004_degraded_runs.sql"
    )))
    .execute(&pool)
    .await
    .expect("migration 4 again");
    let insert = |result: &'static str| {
        sqlx::query("INSERT INTO acceptance_runs (worker_id, result) VALUES ('w', $1)")
            .bind(result)
            .execute(&pool)
    };
    insert("degraded").await.expect("degraded is a result");
    insert("completed").await.expect("completed still is");
    let err = insert("bogus")
        .await
        .expect_err("unknown results are refused");
    assert!(
        err.to_string().contains("acceptance_runs_result_known"),
        "{err}"
    );
    let checks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'acceptance_runs'::regclass AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%result%'",
    )
    .fetch_one(&pool)
    .await
    .expect("constraints");
    assert_eq!(
        checks, 1,
        "the old check was replaced, not kept beside the new one"
    );
}
