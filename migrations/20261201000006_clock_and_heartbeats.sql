-- The 24-hour clock and crash recovery (issue 14).
--
-- 1. Every order's clock starts at the marketplace's `created_date` in its JSON, whoever stored
--    the order: a trigger on `orders` derives `placed_at` from it on every insert and on every
--    change of the JSON, and the projection's `order_created_at` follows `placed_at`.
-- 2. Runs keep a heartbeat (`acceptance_runs.heartbeat_at`, `held_until`); an `accepting` order
--    is held by its run (`run_id`) while that run's `held_until` is in the future, and becomes
--    due again, through the claim's usual `claimable_at` index, once another run's claim finds
--    the holder stale (it sets `released_at`). History stays append-only.
-- 3. The acceptance window and the pending alert threshold live in a one-row table the worker
--    writes at each run, so the views psql users read count with the configured values.
--
-- Safe to re-run: every step is guarded, like the migrations before it.

-- 1. The clock -------------------------------------------------------------------------------

-- Why `placed_at` is unknown (created_date missing, malformed or in the future): the deadline
-- then counts from when the order was stored, and the order's first claim note says so.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS created_date_problem text;

-- Reads created_date as ISO 8601 with a time zone, nothing else: a plain cast would also take
-- 'now', 'today', 'epoch' or a date without a zone (read in the session's zone). A date more than
-- five minutes ahead of the database clock (more than clock skew) is refused too: a deadline
-- that has not started cannot be right.
CREATE OR REPLACE FUNCTION order_created_date(raw jsonb, OUT placed_at timestamptz, OUT problem text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    value text;
BEGIN
    IF jsonb_typeof(raw) = 'object' THEN
        value := raw ->> 'created_date';
    END IF;
    IF value IS NULL OR btrim(value) = '' THEN
        problem := 'created_date is missing';
        RETURN;
    END IF;
    IF value !~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)$' THEN
        problem := format('created_date %s is not an ISO 8601 date and time with a zone',
                          quote_literal(left(value, 40)));
        RETURN;
    END IF;
    BEGIN
        placed_at := value::timestamptz;
    EXCEPTION WHEN others THEN
        problem := format('created_date %s is not a valid date', quote_literal(value));
        RETURN;
    END;
    IF placed_at > now() + interval '5 minutes' THEN
        problem := format('created_date %s is in the future', quote_literal(value));
        placed_at := NULL;
    END IF;
END
$$;

-- On insert, and whenever the JSON changes. Without a readable date, an insert keeps a placed_at
-- its writer gave, and an update keeps the date an earlier JSON gave.
CREATE OR REPLACE FUNCTION orders_take_created_date() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    parsed record;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.raw_order_data IS NOT DISTINCT FROM OLD.raw_order_data THEN
        RETURN NEW;
    END IF;
    parsed := order_created_date(NEW.raw_order_data);
    IF parsed.placed_at IS NOT NULL THEN
        NEW.placed_at := parsed.placed_at;
        NEW.created_date_problem := NULL;
    ELSIF TG_OP = 'INSERT' AND NEW.placed_at IS NOT NULL THEN
        -- The inserter gave the creation date itself: it is the clock.
        NEW.created_date_problem := NULL;
    ELSIF TG_OP = 'INSERT' OR OLD.placed_at IS NULL THEN
        NEW.placed_at := NULL;
        NEW.created_date_problem := parsed.problem;
    ELSE
        NEW.placed_at := OLD.placed_at;
        NEW.created_date_problem := OLD.created_date_problem;
    END IF;
    RETURN NEW;
END
$$;

-- The projection's claim order and deadline follow the order's clock.
CREATE OR REPLACE FUNCTION orders_project_created_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE order_current_status
    SET order_created_at = coalesce(NEW.placed_at, NEW.created_at)
    WHERE order_id = NEW.order_id
      AND order_created_at IS DISTINCT FROM coalesce(NEW.placed_at, NEW.created_at);
    RETURN NULL;
END
$$;

-- Backfill before the triggers exist, set-based: one pass over orders, one over the projection.
UPDATE orders o
SET placed_at = p.placed_at, created_date_problem = p.problem
FROM orders src
CROSS JOIN LATERAL order_created_date(src.raw_order_data) p
WHERE src.order_id = o.order_id
  AND (o.placed_at IS DISTINCT FROM p.placed_at OR o.created_date_problem IS DISTINCT FROM p.problem);

UPDATE order_current_status cs
SET order_created_at = coalesce(o.placed_at, o.created_at)
FROM orders o
WHERE o.order_id = cs.order_id
  AND cs.order_created_at IS DISTINCT FROM coalesce(o.placed_at, o.created_at);

DROP TRIGGER IF EXISTS orders_created_date ON orders;
CREATE TRIGGER orders_created_date
    BEFORE INSERT OR UPDATE OF raw_order_data ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_take_created_date();

-- Not `UPDATE OF placed_at`: a column list sees the statement's SET list, not what the BEFORE
-- trigger above changed.
DROP TRIGGER IF EXISTS orders_project_created_at ON orders;
CREATE TRIGGER orders_project_created_at
    AFTER UPDATE ON orders
    FOR EACH ROW
    WHEN (OLD.placed_at IS DISTINCT FROM NEW.placed_at OR OLD.created_at IS DISTINCT FROM NEW.created_at)
    EXECUTE FUNCTION orders_project_created_at();

-- 2. Heartbeats --------------------------------------------------------------------------------

-- heartbeat_at: the run's last heartbeat. held_until: until when its orders are its own (its last
-- heartbeat plus its lease; at its end, when an OR21 cut short may still land). released_at: when
-- a claim found it past held_until and made its `accepting` orders due again; a released run never
-- heartbeats again. lost: orders the run gave up because it could no longer prove it held them.
ALTER TABLE acceptance_runs ADD COLUMN IF NOT EXISTS heartbeat_at timestamptz;
ALTER TABLE acceptance_runs ADD COLUMN IF NOT EXISTS held_until timestamptz;
ALTER TABLE acceptance_runs ADD COLUMN IF NOT EXISTS released_at timestamptz;
ALTER TABLE acceptance_runs ADD COLUMN IF NOT EXISTS lost integer NOT NULL DEFAULT 0;
-- Runs of earlier releases have no heartbeat; their claims keep the lease written on the
-- `accepting` row (next_attempt_at), so the rows themselves hold nothing.
UPDATE acceptance_runs SET released_at = coalesce(finished_at, now())
WHERE held_until IS NULL AND released_at IS NULL;
-- Only runs that may still hold orders: the claim's stale-run check reads this, not the history.
CREATE INDEX IF NOT EXISTS acceptance_runs_holding
    ON acceptance_runs (held_until) WHERE released_at IS NULL;

-- Which run made a claim; NULL on every other row and on claims of earlier releases.
ALTER TABLE order_status_history ADD COLUMN IF NOT EXISTS run_id bigint;
-- The holder of an `accepting` order.
ALTER TABLE order_current_status ADD COLUMN IF NOT EXISTS run_id bigint;
CREATE INDEX IF NOT EXISTS order_current_status_held
    ON order_current_status (run_id) WHERE run_id IS NOT NULL;

-- A claim with a run is held while its run lives: not claimable (out of the claim's partial
-- index) until a claim releases it. Everything else is as before.
CREATE OR REPLACE FUNCTION project_order_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO order_current_status AS current
        (order_id, history_id, status, "timestamp", attempt, claimable_at, order_created_at, run_id)
    SELECT DISTINCT ON (n.order_id)
           n.order_id, n.history_id, n.status, coalesce(n."timestamp", '-infinity'),
           coalesce(n.attempt, 0),
           CASE WHEN n.status = 'accepting' AND n.run_id IS NOT NULL THEN NULL
                ELSE order_claimable_at(n.status, n."timestamp", n.next_attempt_at) END,
           coalesce(o.placed_at, o.created_at),
           CASE WHEN n.status = 'accepting' THEN n.run_id END
    FROM inserted n
    JOIN orders o ON o.order_id = n.order_id
    ORDER BY n.order_id, coalesce(n."timestamp", '-infinity') DESC, n.history_id DESC
    ON CONFLICT (order_id) DO UPDATE SET
        history_id   = EXCLUDED.history_id,
        status       = EXCLUDED.status,
        "timestamp"  = EXCLUDED."timestamp",
        attempt      = EXCLUDED.attempt,
        claimable_at = EXCLUDED.claimable_at,
        run_id       = EXCLUDED.run_id
    WHERE (current."timestamp", current.history_id) < (EXCLUDED."timestamp", EXCLUDED.history_id);
    RETURN NULL;
END
$$;

-- 3. The window, for the views -----------------------------------------------------------------

-- One row: `marketplace.acceptance_window` and `alerts.pending_after` as the worker last ran with
-- them (defaults until a run writes them).
CREATE TABLE IF NOT EXISTS acceptance_settings (
    singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    acceptance_window interval NOT NULL DEFAULT interval '24 hours',
    pending_after     interval NOT NULL DEFAULT interval '20 hours',
    updated_at        timestamptz NOT NULL DEFAULT now()
);
INSERT INTO acceptance_settings DEFAULT VALUES ON CONFLICT DO NOTHING;

-- The window the views count with; 24 hours should the row be gone.
CREATE OR REPLACE FUNCTION acceptance_window() RETURNS interval
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT acceptance_window FROM acceptance_settings), interval '24 hours')
$$;

-- The views keep their columns (earlier migrations stay re-runnable); the thresholds come from the
-- settings row. pending_orders has no deadline column: `order_created_at + acceptance_window()`.
CREATE OR REPLACE VIEW orders_pending_too_long AS
SELECT order_id, status, attempt, claimable_at, order_created_at, pending_for
FROM pending_orders
WHERE order_created_at < now() - coalesce((SELECT pending_after FROM acceptance_settings), interval '20 hours');

CREATE OR REPLACE VIEW orders_in_review AS
SELECT cs.order_id,
       cs.order_created_at,
       cs."timestamp"                                       AS in_review_since,
       cs.order_created_at + acceptance_window()            AS deadline,
       cs.order_created_at + acceptance_window() - now()    AS time_left,
       h.notes
FROM order_current_status cs
JOIN order_status_history h ON h.history_id = cs.history_id
WHERE cs.status = 'in_review';

-- Runs that hold orders now, with how many.
CREATE OR REPLACE VIEW live_runs AS
SELECT r.run_id,
       r.worker_id,
       r.started_at,
       r.heartbeat_at,
       r.held_until,
       (SELECT count(*) FROM order_current_status cs
        WHERE cs.run_id = r.run_id AND cs.status = 'accepting') AS orders_held
FROM acceptance_runs r
WHERE r.released_at IS NULL AND r.finished_at IS NULL AND r.held_until > now();
