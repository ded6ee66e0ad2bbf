-- The worker's schema, created fresh or adopted from the earlier Python workflow's tables.
--
-- Sellers moving from that workflow already have orders, order_status_history, api_calls and
-- process_failures with data in them. Every statement here is therefore guarded (IF NOT EXISTS,
-- catalog checks) so it keeps their rows, only adds what is missing, and can be re-run after a
-- failure. Constraints added to tables that may hold old data are NOT VALID: they bind new rows
-- without failing the migration on a legacy row that breaks them.

-- Orders -------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS orders (
    order_id       text PRIMARY KEY,
    raw_order_data jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE orders ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE orders ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
-- The marketplace's creation date: the 24-hour acceptance window runs from it, so the claim
-- takes the oldest first.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS placed_at timestamptz;

-- Legacy rows may hold anything in created_date; a bad value must not fail the migration.
CREATE OR REPLACE FUNCTION try_timestamptz(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN value::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;

UPDATE orders
SET placed_at = try_timestamptz(raw_order_data ->> 'created_date')
WHERE placed_at IS NULL AND raw_order_data ? 'created_date';

-- Status history: append-only ----------------------------------------------------------------

CREATE TABLE IF NOT EXISTS order_status_history (
    history_id  bigserial PRIMARY KEY,
    order_id    text NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    status      text NOT NULL,
    notes       text,
    "timestamp" timestamptz NOT NULL DEFAULT now()
);
-- Which claim of the order this row belongs to (1 for the first).
ALTER TABLE order_status_history ADD COLUMN IF NOT EXISTS attempt integer;
-- For `accepting`: when the lease expires. For `acceptance_failed`: when a retry is due (NULL:
-- left to a person). For `pending_acceptance`: not before (NULL: now).
ALTER TABLE order_status_history ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz;
ALTER TABLE order_status_history ADD COLUMN IF NOT EXISTS worker_id text;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'order_status_history'::regclass AND contype = 'f'
    ) THEN
        ALTER TABLE order_status_history
            ADD CONSTRAINT order_status_history_order_id_fkey
            FOREIGN KEY (order_id) REFERENCES orders (order_id) ON DELETE CASCADE NOT VALID;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint WHERE conname = 'order_status_history_status_not_blank'
    ) THEN
        ALTER TABLE order_status_history
            ADD CONSTRAINT order_status_history_status_not_blank
            CHECK (btrim(status) <> '') NOT VALID;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint WHERE conname = 'order_status_history_attempt_positive'
    ) THEN
        ALTER TABLE order_status_history
            ADD CONSTRAINT order_status_history_attempt_positive
            CHECK (attempt IS NULL OR attempt >= 0) NOT VALID;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS order_status_history_order_latest
    ON order_status_history (order_id, "timestamp" DESC, history_id DESC);

CREATE OR REPLACE FUNCTION reject_history_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'order_status_history is append-only: insert a new row for order % instead of updating history row %',
        OLD.order_id, OLD.history_id
        USING ERRCODE = 'restrict_violation';
END
$$;

DROP TRIGGER IF EXISTS order_status_history_append_only ON order_status_history;
CREATE TRIGGER order_status_history_append_only
    BEFORE UPDATE ON order_status_history
    FOR EACH ROW EXECUTE FUNCTION reject_history_update();

-- Current status: the projection the claim reads -------------------------------------------

CREATE TABLE IF NOT EXISTS order_current_status (
    order_id         text PRIMARY KEY REFERENCES orders (order_id) ON DELETE CASCADE,
    history_id       bigint NOT NULL,
    status           text NOT NULL,
    "timestamp"      timestamptz NOT NULL,
    attempt          integer NOT NULL DEFAULT 0,
    -- When a claim may take the order; NULL when it never may (final or foreign statuses).
    claimable_at     timestamptz,
    -- Claim order: the marketplace's creation date when known, else when we stored the order.
    order_created_at timestamptz NOT NULL
);

-- Only due orders are in this index, so the claim's cost follows the queue, not the history.
CREATE INDEX IF NOT EXISTS order_current_status_claimable
    ON order_current_status (order_created_at, order_id)
    WHERE claimable_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS order_current_status_status
    ON order_current_status (status);

CREATE OR REPLACE FUNCTION order_claimable_at(status text, at timestamptz, next_attempt_at timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE status
        WHEN 'pending_acceptance' THEN coalesce(next_attempt_at, at)
        WHEN 'accepting' THEN coalesce(next_attempt_at, at)
        WHEN 'acceptance_failed' THEN next_attempt_at
    END
$$;

-- Latest means greatest ("timestamp", history_id): a late insert of an older row never rewinds
-- the projection, and rows of one transaction (equal now()) resolve to the later history_id.
-- A statement-level trigger over the inserted rows: one set-based upsert per statement, so the
-- claim's 100 `accepting` rows cost one upsert, not 100 function calls.
CREATE OR REPLACE FUNCTION project_order_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO order_current_status AS current
        (order_id, history_id, status, "timestamp", attempt, claimable_at, order_created_at)
    SELECT DISTINCT ON (n.order_id)
           n.order_id, n.history_id, n.status, coalesce(n."timestamp", '-infinity'),
           coalesce(n.attempt, 0),
           order_claimable_at(n.status, n."timestamp", n.next_attempt_at),
           coalesce(o.placed_at, o.created_at)
    FROM inserted n
    JOIN orders o ON o.order_id = n.order_id
    ORDER BY n.order_id, coalesce(n."timestamp", '-infinity') DESC, n.history_id DESC
    ON CONFLICT (order_id) DO UPDATE SET
        history_id   = EXCLUDED.history_id,
        status       = EXCLUDED.status,
        "timestamp"  = EXCLUDED."timestamp",
        attempt      = EXCLUDED.attempt,
        claimable_at = EXCLUDED.claimable_at
    WHERE (current."timestamp", current.history_id) < (EXCLUDED."timestamp", EXCLUDED.history_id);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS order_status_history_project ON order_status_history;
CREATE TRIGGER order_status_history_project
    AFTER INSERT ON order_status_history
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION project_order_status();

-- Backfill from the history an adopted database already has.
INSERT INTO order_current_status
    (order_id, history_id, status, "timestamp", attempt, claimable_at, order_created_at)
SELECT DISTINCT ON (h.order_id)
       h.order_id, h.history_id, h.status, coalesce(h."timestamp", '-infinity'),
       coalesce(h.attempt, 0),
       order_claimable_at(h.status, h."timestamp", h.next_attempt_at),
       coalesce(o.placed_at, o.created_at)
FROM order_status_history h
JOIN orders o ON o.order_id = h.order_id
ORDER BY h.order_id, coalesce(h."timestamp", '-infinity') DESC, h.history_id DESC
ON CONFLICT (order_id) DO NOTHING;

-- Failure inbox ------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS process_failures (
    failure_id   bigserial PRIMARY KEY,
    related_id   text,
    process_name text NOT NULL,
    details      text,
    payload      jsonb,
    "timestamp"  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE process_failures ADD COLUMN IF NOT EXISTS resolved_at timestamptz;
ALTER TABLE process_failures ADD COLUMN IF NOT EXISTS resolution_note text;
ALTER TABLE process_failures ADD COLUMN IF NOT EXISTS resolved_by text;
-- True while a later run will retry the order by itself.
ALTER TABLE process_failures ADD COLUMN IF NOT EXISTS retryable boolean NOT NULL DEFAULT false;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint WHERE conname = 'process_failures_process_name_not_blank'
    ) THEN
        ALTER TABLE process_failures
            ADD CONSTRAINT process_failures_process_name_not_blank
            CHECK (btrim(process_name) <> '') NOT VALID;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint WHERE conname = 'process_failures_resolution_complete'
    ) THEN
        ALTER TABLE process_failures
            ADD CONSTRAINT process_failures_resolution_complete
            CHECK (resolved_at IS NULL OR resolution_note IS NOT NULL) NOT VALID;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS process_failures_open
    ON process_failures ("timestamp" DESC) WHERE resolved_at IS NULL;
CREATE INDEX IF NOT EXISTS process_failures_related_id
    ON process_failures (related_id);

-- API calls: one row per HTTP attempt ---------------------------------------------------------

CREATE TABLE IF NOT EXISTS api_calls (
    call_id         bigserial PRIMARY KEY,
    service         text NOT NULL,
    endpoint        text NOT NULL,
    related_id      text,
    request_payload jsonb,
    response_body   text,
    status_code     integer,
    is_success      boolean NOT NULL,
    "timestamp"     timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE api_calls ADD COLUMN IF NOT EXISTS duration_ms integer;
ALTER TABLE api_calls ADD COLUMN IF NOT EXISTS method text;
ALTER TABLE api_calls ADD COLUMN IF NOT EXISTS path text;
ALTER TABLE api_calls ADD COLUMN IF NOT EXISTS attempt integer;
ALTER TABLE api_calls ADD COLUMN IF NOT EXISTS error text;
ALTER TABLE api_calls ADD COLUMN IF NOT EXISTS response_truncated boolean NOT NULL DEFAULT false;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint WHERE conname = 'api_calls_duration_not_negative'
    ) THEN
        ALTER TABLE api_calls
            ADD CONSTRAINT api_calls_duration_not_negative
            CHECK (duration_ms IS NULL OR duration_ms >= 0) NOT VALID;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint WHERE conname = 'api_calls_endpoint_not_blank'
    ) THEN
        ALTER TABLE api_calls
            ADD CONSTRAINT api_calls_endpoint_not_blank
            CHECK (btrim(endpoint) <> '') NOT VALID;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS api_calls_timestamp ON api_calls ("timestamp");
CREATE INDEX IF NOT EXISTS api_calls_related_id ON api_calls (related_id);

-- Runs: one row per acceptance run, for `status` and the metrics -----------------------------

CREATE TABLE IF NOT EXISTS acceptance_runs (
    run_id          bigserial PRIMARY KEY,
    worker_id       text NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    -- running, completed, failed (a fatal error), interrupted (shutdown before the end)
    result          text NOT NULL DEFAULT 'running'
        CHECK (result IN ('running', 'completed', 'failed', 'interrupted')),
    imported        integer NOT NULL DEFAULT 0,
    claimed         integer NOT NULL DEFAULT 0,
    accepted        integer NOT NULL DEFAULT 0,
    cancelled       integer NOT NULL DEFAULT 0,
    failed          integer NOT NULL DEFAULT 0,
    retry_scheduled integer NOT NULL DEFAULT 0,
    api_calls       integer NOT NULL DEFAULT 0,
    error           text
);
CREATE INDEX IF NOT EXISTS acceptance_runs_started_at ON acceptance_runs (started_at DESC);
