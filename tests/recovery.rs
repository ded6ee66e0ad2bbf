//! The acceptance clock and crash recovery (issue 14): deadlines from the order's own
//! `created_date`, heartbeats instead of a work-sized lease, and the fence that keeps a run that
//! lost its orders from sending OR21 or writing outcomes over the run that holds them now.
//!
//! The race windows are opened on purpose: a holder made stale while its OR21 is in flight, a
//! real `order-acceptance --once` process paused with SIGSTOP past its lease and resumed after a
//! takeover, an outcome recorded after the claim was lost, heartbeats that fail, and two runs
//! racing for a stale holder's orders. Intervals are short and configured (heartbeat 200 ms);
//! nothing sleeps for what can be awaited.

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::{API_KEY, TestApp, spawn_app};
use marketplace_sim::{Behaviour, OrderSpec, Scripted};
use order_acceptance::acceptance::{self, RunResult};
use order_acceptance::db::outcomes::{OutcomeRecord, record_outcomes};
use order_acceptance::db::queue::{ClaimError, claim_due_orders};
use order_acceptance::db::runs;
use order_acceptance::inbox;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_order-acceptance");

/// Short heartbeats, and a marketplace slow enough (1.5 s a call) that a run is caught between
/// its claim and its OR21: lease 3 s, fence margin 2 s + 0.3 s, so a run sends for 0.7 s after
/// each heartbeat.
const FAST_LEASE: [(&str, &str); 6] = [
    ("ORDER_ACCEPTANCE__ACCEPTANCE__HEARTBEAT", "200ms"),
    ("ORDER_ACCEPTANCE__ACCEPTANCE__LEASE", "3s"),
    ("ORDER_ACCEPTANCE__MARKETPLACE__TIMEOUT", "2s"),
    ("ORDER_ACCEPTANCE__MARKETPLACE__RETRY_BUDGET", "3s"),
    ("ORDER_ACCEPTANCE__IMPORT__ENABLED", "false"),
    ("ORDER_ACCEPTANCE__VALIDATION__MAX_ATTEMPTS", "20"),
];

fn waiting(id: &str) -> OrderSpec {
    OrderSpec {
        order_id: Some(id.into()),
        lines: Some(1),
        ..OrderSpec::default()
    }
}

/// Orders known to the simulator and handed over to the worker as an upstream system does.
async fn hand_over(app: &TestApp, ids: &[&str]) {
    app.sim
        .add_orders(ids.iter().map(|id| waiting(id)).collect());
    for id in ids {
        let created = (Utc::now() - TimeDelta::hours(1)).to_rfc3339();
        app.insert_pending(id, json!({"order_id": id, "created_date": created}))
            .await;
    }
}

async fn slow_app(pool: PgPool) -> TestApp {
    spawn_app(
        pool,
        |sim| sim.faults.latency = Some((Duration::from_millis(1500), Duration::from_millis(1500))),
        &FAST_LEASE,
    )
    .await
}

/// Waits for a database condition, polling every few milliseconds, for at most 15 s.
async fn wait_for(pool: &PgPool, what: &str, sql: &'static str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let done: bool = sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await
            .expect("condition");
        if done {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// (status, attempt, run_id) of an order's history rows, oldest first.
async fn history(pool: &PgPool, order_id: &str) -> Vec<(String, Option<i32>, Option<i64>)> {
    sqlx::query_as(
        "SELECT status, attempt, run_id FROM order_status_history WHERE order_id = $1 ORDER BY \"timestamp\", history_id",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
    .expect("history")
}

async fn expire_hold(pool: &PgPool, run_id: i64) {
    sqlx::query(
        "UPDATE acceptance_runs SET held_until = now() - interval '1 second' WHERE run_id = $1",
    )
    .bind(run_id)
    .execute(pool)
    .await
    .expect("expire the hold");
}

async fn only_run(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT run_id FROM acceptance_runs ORDER BY run_id LIMIT 1")
        .fetch_one(pool)
        .await
        .expect("run")
}

// The clock ---------------------------------------------------------------------------------

#[sqlx::test]
async fn a_handed_over_order_counts_its_deadline_from_created_date(pool: PgPool) {
    let created = Utc::now() - TimeDelta::hours(23);
    let app = spawn_app(pool, |_| {}, &[]).await;
    app.insert_pending(
        "OLD-23H",
        json!({"order_id": "OLD-23H", "created_date": created.to_rfc3339()}),
    )
    .await;

    let (placed, projected): (Option<DateTime<Utc>>, DateTime<Utc>) = sqlx::query_as(
        "SELECT o.placed_at, c.order_created_at FROM orders o JOIN order_current_status c USING (order_id) WHERE order_id = 'OLD-23H'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("order");
    let close = |at: DateTime<Utc>| (at - created).num_milliseconds().abs() < 1;
    assert!(placed.is_some_and(close), "{placed:?}");
    assert!(close(projected), "{projected}");

    let report = inbox::status_report(
        &app.pool,
        None,
        &[("default", Duration::from_secs(24 * 3600))],
        Duration::from_secs(20 * 3600),
        Utc::now(),
    )
    .await
    .expect("status");
    let nearest = report.pending.nearest_deadline.expect("a deadline");
    assert!((3500..=3600).contains(&nearest.seconds_left), "{nearest:?}");
    assert_eq!(report.pending.too_long_count, 1);
    let too_long: Vec<String> = sqlx::query_scalar("SELECT order_id FROM orders_pending_too_long")
        .fetch_all(&app.pool)
        .await
        .expect("view");
    assert_eq!(too_long, ["OLD-23H"]);

    // A corrected JSON moves the clock, and the projection follows.
    let corrected = created - TimeDelta::hours(1);
    sqlx::query("UPDATE orders SET raw_order_data = $1 WHERE order_id = 'OLD-23H'")
        .bind(json!({"order_id": "OLD-23H", "created_date": corrected.to_rfc3339()}))
        .execute(&app.pool)
        .await
        .expect("update");
    let projected: DateTime<Utc> = sqlx::query_scalar(
        "SELECT order_created_at FROM order_current_status WHERE order_id = 'OLD-23H'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("projection");
    assert!(
        (projected - corrected).num_milliseconds().abs() < 1,
        "{projected}"
    );
}

#[sqlx::test]
async fn a_missing_malformed_or_future_created_date_keeps_the_storage_time_and_says_so(
    pool: PgPool,
) {
    let app = spawn_app(pool, |_| {}, &[]).await;
    let future = (Utc::now() + TimeDelta::days(2)).to_rfc3339();
    let cases = [
        (
            "NO-DATE",
            json!({"order_id": "NO-DATE"}),
            "created_date is missing",
        ),
        (
            "BAD-DATE",
            json!({"order_id": "BAD-DATE", "created_date": "yesterday"}),
            "is not an ISO 8601",
        ),
        (
            "NOW-DATE",
            json!({"order_id": "NOW-DATE", "created_date": "now"}),
            "is not an ISO 8601",
        ),
        (
            "NUM-DATE",
            json!({"order_id": "NUM-DATE", "created_date": 1_700_000_000}),
            "is not an ISO 8601",
        ),
        (
            "FEB-30",
            json!({"order_id": "FEB-30", "created_date": "2026-02-30T10:00:00Z"}),
            "is not a valid date",
        ),
        (
            "FUTURE",
            json!({"order_id": "FUTURE", "created_date": future}),
            "is in the future",
        ),
    ];
    for (id, raw, _) in &cases {
        app.insert_pending(id, raw.clone()).await;
    }
    let run_id = runs::start_run(&app.pool, "default", "test-worker", Duration::from_secs(60))
        .await
        .expect("run");
    let claims = claim_due_orders(&app.pool, "default", "test-worker", run_id, 10, None)
        .await
        .expect("claim");
    assert_eq!(claims.len(), cases.len());

    for (id, _, problem) in cases {
        let (placed, stored, projected, note): (
            Option<DateTime<Utc>>,
            DateTime<Utc>,
            DateTime<Utc>,
            String,
        ) = sqlx::query_as(
            "SELECT o.placed_at, o.created_at, c.order_created_at, h.notes
             FROM orders o JOIN order_current_status c USING (order_id)
             JOIN order_status_history h ON h.history_id = c.history_id
             WHERE o.order_id = $1",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("order");
        assert_eq!(placed, None, "{id}");
        assert_eq!(projected, stored, "{id}: the deadline counts from storage");
        assert!(note.contains(problem), "{id}: {note}");
        assert!(
            note.contains("the deadline counts from when the order was stored"),
            "{id}: {note}"
        );
    }
}

// Claims and takeovers ------------------------------------------------------------------------

#[sqlx::test]
async fn two_runs_racing_for_a_stale_holders_orders_claim_each_exactly_once(pool: PgPool) {
    let app = spawn_app(pool, |_| {}, &[]).await;
    let ids: Vec<String> = (0..40).map(|i| format!("RACE-{i:02}")).collect();
    for id in &ids {
        app.insert_pending(
            id,
            json!({"order_id": id, "created_date": "2026-01-01T00:00:00Z"}),
        )
        .await;
    }
    let lease = Duration::from_secs(60);
    let dead = runs::start_run(&app.pool, "default", "dead-worker", lease)
        .await
        .expect("run");
    let held = claim_due_orders(&app.pool, "default", "dead-worker", dead, 100, None)
        .await
        .expect("claim");
    assert_eq!(held.len(), 40);
    let b = runs::start_run(&app.pool, "default", "worker-b", lease)
        .await
        .expect("run");
    let c = runs::start_run(&app.pool, "default", "worker-c", lease)
        .await
        .expect("run");
    assert!(
        claim_due_orders(&app.pool, "default", "worker-b", b, 100, None)
            .await
            .expect("claim")
            .is_empty(),
        "a live holder keeps its orders"
    );

    expire_hold(&app.pool, dead).await;
    let (by_b, by_c) = tokio::join!(
        claim_due_orders(&app.pool, "default", "worker-b", b, 100, None),
        claim_due_orders(&app.pool, "default", "worker-c", c, 100, None),
    );
    let by_b: HashSet<String> = by_b.expect("b").into_iter().map(|c| c.order_id).collect();
    let by_c: HashSet<String> = by_c.expect("c").into_iter().map(|c| c.order_id).collect();
    assert!(by_b.is_disjoint(&by_c), "{by_b:?} {by_c:?}");
    assert_eq!(by_b.len() + by_c.len(), 40);
    let claims: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM order_status_history WHERE status = 'accepting' AND attempt = 2",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(claims, 40, "exactly one second claim per order");
    let released: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT released_at FROM acceptance_runs WHERE run_id = $1")
            .bind(dead)
            .fetch_one(&app.pool)
            .await
            .expect("run");
    assert!(released.is_some());
    // A released run's heartbeat is refused: it can never come back to orders it lost.
    let mut conn = app.pool.acquire().await.expect("connection");
    let beat = runs::heartbeat(&mut conn, dead, lease).await.expect("beat");
    assert_eq!(beat, runs::Beat::Released);
}

#[sqlx::test]
async fn a_run_whose_hold_ran_out_claims_nothing_not_even_its_own_orders_again(pool: PgPool) {
    // A run paused between its local fence check and its next claim resumes past its lease:
    // the claim must not release that very run and hand its orders back to it.
    let app = spawn_app(pool, |_| {}, &[]).await;
    hand_over(&app, &["OWN-1", "NEW-1"]).await;
    let lease = Duration::from_secs(60);
    let paused = runs::start_run(&app.pool, "default", "paused", lease)
        .await
        .expect("run");
    let only_own = ["OWN-1".to_owned()];
    let held = claim_due_orders(&app.pool, "default", "paused", paused, 10, Some(&only_own))
        .await
        .expect("claim");
    assert_eq!(held.len(), 1);
    expire_hold(&app.pool, paused).await;

    let again = claim_due_orders(&app.pool, "default", "paused", paused, 10, None).await;
    assert!(
        matches!(again, Err(ClaimError::RunNotHeld { run_id }) if run_id == paused),
        "{again:?}"
    );
    assert_eq!(
        history(&app.pool, "OWN-1").await,
        [
            ("pending_acceptance".into(), None, None),
            ("accepting".into(), Some(1), Some(paused)),
        ],
        "no second claim by the run that lost its hold"
    );
    assert_eq!(app.current_status("NEW-1").await.0, "pending_acceptance");
    // It released itself: no late heartbeat can bring its hold back.
    let mut conn = app.pool.acquire().await.expect("connection");
    let beat = runs::heartbeat(&mut conn, paused, lease)
        .await
        .expect("beat");
    assert_eq!(beat, runs::Beat::Released);

    let fresh = runs::start_run(&app.pool, "default", "fresh", lease)
        .await
        .expect("run");
    let taken = claim_due_orders(&app.pool, "default", "fresh", fresh, 10, None)
        .await
        .expect("claim");
    let mut taken: Vec<(String, i32)> =
        taken.into_iter().map(|c| (c.order_id, c.attempt)).collect();
    taken.sort();
    assert_eq!(taken, [("NEW-1".into(), 1), ("OWN-1".into(), 2)]);
}

#[sqlx::test]
async fn a_claim_racing_a_release_of_its_own_run_takes_nothing(pool: PgPool) {
    // Another run releases this one while its claim is under way: the claim's last check waits
    // for that release to commit, sees it, and takes nothing, so no order is left claimed by a
    // run whose orders were already handed back.
    let app = spawn_app(pool, |_| {}, &[]).await;
    hand_over(&app, &["RACED-1"]).await;
    let run = runs::start_run(&app.pool, "default", "raced", Duration::from_secs(60))
        .await
        .expect("run");
    let mut releaser = app.pool.begin().await.expect("begin");
    sqlx::query("UPDATE acceptance_runs SET released_at = now() WHERE run_id = $1")
        .bind(run)
        .execute(&mut *releaser)
        .await
        .expect("release, not yet committed");

    let claim = {
        let pool = app.pool.clone();
        tokio::spawn(
            async move { claim_due_orders(&pool, "default", "raced", run, 10, None).await },
        )
    };
    wait_for(
        &app.pool,
        "the claim waiting on its run's row",
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                        WHERE datname = current_database() AND wait_event_type = 'Lock')",
    )
    .await;
    releaser.commit().await.expect("commit the release");

    let claimed = claim.await.expect("join");
    assert!(
        matches!(claimed, Err(ClaimError::RunNotHeld { run_id }) if run_id == run),
        "{claimed:?}"
    );
    assert_eq!(
        history(&app.pool, "RACED-1").await,
        [("pending_acceptance".into(), None, None)],
        "the claim was undone"
    );
}

#[sqlx::test]
async fn an_outcome_recorded_after_the_claim_was_lost_writes_nothing_over_the_new_holder(
    pool: PgPool,
) {
    let app = spawn_app(pool, |_| {}, &[]).await;
    app.insert_pending(
        "LATE-1",
        json!({"order_id": "LATE-1", "created_date": "2026-01-01T00:00:00Z"}),
    )
    .await;
    let lease = Duration::from_secs(60);
    let old = runs::start_run(&app.pool, "default", "frozen", lease)
        .await
        .expect("run");
    let first = claim_due_orders(&app.pool, "default", "frozen", old, 10, None)
        .await
        .expect("claim");
    expire_hold(&app.pool, old).await;
    let new = runs::start_run(&app.pool, "default", "holder", lease)
        .await
        .expect("run");
    let second = claim_due_orders(&app.pool, "default", "holder", new, 10, None)
        .await
        .expect("claim");
    assert_eq!((first[0].attempt, second[0].attempt), (1, 2));

    let outcome = |attempt, note: &str| OutcomeRecord {
        order_id: "LATE-1".into(),
        attempt,
        status: "accepted",
        note: note.into(),
        reason_code: None,
        lines: None,
        release_reservations: None,
        carries_out_review: true,
        retry_in: None,
        failure: None,
    };
    let lost = record_outcomes(
        &app.pool,
        "default",
        old,
        &[outcome(1, "from the frozen run")],
    )
    .await
    .expect("record");
    assert_eq!(lost, ["LATE-1"]);
    assert_eq!(
        history(&app.pool, "LATE-1").await,
        [
            ("pending_acceptance".into(), None, None),
            ("accepting".into(), Some(1), Some(old)),
            ("accepting".into(), Some(2), Some(new)),
        ]
    );
    let lost = record_outcomes(&app.pool, "default", new, &[outcome(2, "from the holder")])
        .await
        .expect("record");
    assert!(lost.is_empty());
    assert_eq!(app.current_status("LATE-1").await.0, "accepted");
}

// Fences around OR21 --------------------------------------------------------------------------

#[sqlx::test]
async fn a_holder_gone_stale_while_its_or21_is_in_flight_records_nothing_over_the_takeover(
    pool: PgPool,
) {
    // Its OR21 is applied at once, but the simulator holds the answer back until the takeover
    // is done, however long a loaded host makes that. A 60 s lease and a 30 s timeout keep the
    // holder waiting for that answer and the takeover run's own fence open (24 s of sending after
    // a heartbeat); the holder's staleness is set by hand.
    let roomy: Vec<(&str, &str)> = FAST_LEASE
        .iter()
        .map(|&(key, value)| match key {
            "ORDER_ACCEPTANCE__ACCEPTANCE__LEASE" => (key, "60s"),
            "ORDER_ACCEPTANCE__MARKETPLACE__TIMEOUT" => (key, "30s"),
            _ => (key, value),
        })
        .collect();
    let app = spawn_app(
        pool,
        |sim| sim.faults.slow_delay = Duration::from_secs(60),
        &roomy,
    )
    .await;
    app.sim.add_orders(vec![OrderSpec {
        behaviour: Behaviour {
            or21: vec![Scripted::SlowApplied],
            ..Behaviour::default()
        },
        ..waiting("INFLIGHT-1")
    }]);
    app.insert_pending(
        "INFLIGHT-1",
        json!({"order_id": "INFLIGHT-1", "created_date": "2026-01-01T00:00:00Z"}),
    )
    .await;

    let holder = app.worker();
    let first =
        tokio::spawn(async move { acceptance::run(&holder, &CancellationToken::new()).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.or21_calls("INFLIGHT-1") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no OR21 in 10 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The OR21 is on the wire; the holder's heartbeat is declared stale and another run takes
    // the order, reads it accepted at the marketplace, and records it.
    // Its heartbeats stop reaching the database (else the live holder would renew its hold).
    break_heartbeats(&app.pool).await;
    let stale = only_run(&app.pool).await;
    expire_hold(&app.pool, stale).await;
    let takeover = acceptance::run(&app.worker(), &CancellationToken::new())
        .await
        .expect("takeover run");
    assert_eq!((takeover.claimed, takeover.accepted), (1, 1));

    app.sim.release_slow_answers();
    let first = first.await.expect("join").expect("first run");
    assert_eq!(first.lost, 1, "{first:?}");
    assert_eq!(first.accepted, 0);
    assert_eq!(
        app.or21_calls("INFLIGHT-1"),
        1,
        "one OR21, by the first holder"
    );
    let terminal: Vec<(String, Option<i32>, Option<i64>)> = history(&app.pool, "INFLIGHT-1")
        .await
        .into_iter()
        .filter(|(status, _, _)| status != "pending_acceptance" && status != "accepting")
        .collect();
    assert_eq!(terminal, [("accepted".into(), Some(2), None)]);
}

#[sqlx::test]
async fn when_heartbeats_fail_no_or21_goes_out_and_the_next_run_recovers_every_order(pool: PgPool) {
    let app = slow_app(pool).await;
    let ids = ["HB-1", "HB-2", "HB-3"];
    hand_over(&app, &ids).await;

    let worker = app.worker();
    let first =
        tokio::spawn(async move { acceptance::run(&worker, &CancellationToken::new()).await });
    wait_for(
        &app.pool,
        "the first claim",
        "SELECT count(*) = 3 FROM order_current_status WHERE status = 'accepting'",
    )
    .await;
    // The database "restarts" for heartbeats: every heartbeat write fails from now on, while the
    // run's preflight read (1.5 s) is still on its way.
    break_heartbeats(&app.pool).await;

    let first = first.await.expect("join").expect("first run");
    assert_eq!(
        (first.claimed, first.lost, first.accepted),
        (3, 3, 0),
        "{first:?}"
    );
    assert_eq!(
        app.sim.stats().requests.get("OR21"),
        None,
        "no OR21 after the margin"
    );

    sqlx::raw_sql("DROP TRIGGER fail_heartbeat ON acceptance_runs")
        .execute(&app.pool)
        .await
        .expect("database back");
    app.let_time_pass().await;
    let next = acceptance::run(&app.worker(), &CancellationToken::new())
        .await
        .expect("next run");
    assert_eq!((next.claimed, next.accepted), (3, 3), "{next:?}");
    for id in ids {
        assert_eq!(app.or21_calls(id), 1, "{id}: sent once");
        assert_eq!(app.current_status(id).await.0, "accepted");
    }
}

#[sqlx::test]
async fn a_paused_process_resumed_after_a_takeover_sends_nothing_and_records_nothing(pool: PgPool) {
    let app = slow_app(pool).await;
    let ids = ["PAUSE-1", "PAUSE-2"];
    hand_over(&app, &ids).await;

    let mut env = common::test_env(&app.sim.url(), API_KEY);
    env.extend(
        FAST_LEASE
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    env.retain(|(k, _)| k != "DATABASE_URL");
    let child = Command::new(BIN)
        .arg("--once")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url_of(&app.pool))
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start order-acceptance --once");
    wait_for(
        &app.pool,
        "the child's claim",
        "SELECT count(*) = 2 FROM order_current_status WHERE status = 'accepting'",
    )
    .await;
    signal(child.id(), "STOP");

    // Stopped past its lease: another run takes its orders over and decides them.
    let paused = only_run(&app.pool).await;
    expire_hold(&app.pool, paused).await;
    let takeover = acceptance::run(&app.worker(), &CancellationToken::new())
        .await
        .expect("takeover run");
    assert_eq!(
        (takeover.claimed, takeover.accepted),
        (2, 2),
        "{takeover:?}"
    );

    signal(child.id(), "CONT");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("child output");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    for id in ids {
        assert_eq!(app.or21_calls(id), 1, "{id}: only the new holder sent OR21");
        let outcomes: Vec<(String, Option<i32>, Option<i64>)> = history(&app.pool, id)
            .await
            .into_iter()
            .filter(|(status, _, _)| status == "accepted")
            .collect();
        assert_eq!(outcomes, [("accepted".into(), Some(2), None)], "{id}");
    }
    let (result, lost): (String, i32) =
        sqlx::query_as("SELECT result, lost FROM acceptance_runs WHERE run_id = $1")
            .bind(paused)
            .fetch_one(&app.pool)
            .await
            .expect("paused run");
    assert_eq!((result.as_str(), lost), ("completed", 2), "{log}");
    assert_eq!(takeover.result, RunResult::Completed);
}

/// Every heartbeat write fails from now on (the other statements on runs still work), as while
/// the database restarts; `DROP TRIGGER fail_heartbeat ON acceptance_runs` ends it.
async fn break_heartbeats(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE FUNCTION fail_heartbeat() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'database restarting'; END $$;
         CREATE TRIGGER fail_heartbeat BEFORE UPDATE ON acceptance_runs FOR EACH ROW
         WHEN (NEW.heartbeat_at IS DISTINCT FROM OLD.heartbeat_at) EXECUTE FUNCTION fail_heartbeat();",
    )
    .execute(pool)
    .await
    .expect("break heartbeats");
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// The URL of the test's own database, for the child process.
fn database_url_of(pool: &PgPool) -> String {
    let mut url = url::Url::parse(&std::env::var("DATABASE_URL").expect("DATABASE_URL"))
        .expect("DATABASE_URL is a URL");
    let options = pool.connect_options();
    url.set_path(
        options
            .get_database()
            .expect("the test pool names its database"),
    );
    url.to_string()
}
