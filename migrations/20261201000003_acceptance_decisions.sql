-- Acceptance decisions (issue 9): a stock source, reservations, one decision row per order line,
-- the review queue, and the statuses `in_review` and `refused`.
--
-- Safe to re-run: every step is guarded, like the migrations before it.

-- The stock source ------------------------------------------------------------------------------
-- What the rules read (`rules.stock_relation`, default this table). A seller may drop it and
-- create a view of the same name and columns over their own inventory (docs/CONFIGURATION.md).
-- Nullable and unchecked on purpose: a view may yield a NULL sku or a negative count, and the
-- worker ignores such rows with a warning rather than failing.
CREATE TABLE IF NOT EXISTS acceptance_stock (
    sku        text,
    -- Units that can be shipped now, before this worker's open reservations.
    available  integer NOT NULL DEFAULT 0,
    -- The lowest unit price (tax included) the seller sells at; NULL: no floor.
    min_price  numeric,
    -- Lines short of stock may still be accepted and shipped later.
    backorder  boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS acceptance_stock_sku ON acceptance_stock (sku);

-- Reservations: units promised to accepted lines ------------------------------------------------
-- Available = acceptance_stock.available − open reservations (released_at IS NULL, and younger
-- than rules.reservation_ttl when one is set). The worker releases a reservation when its order
-- ends refused or cancelled or its OR21 certainly failed; the rest are closed by whoever ships
-- the goods (set released_at once `available` no longer counts the units).
CREATE TABLE IF NOT EXISTS stock_reservations (
    reservation_id bigserial PRIMARY KEY,
    order_id       text NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    order_line_id  text NOT NULL,
    sku            text NOT NULL,
    quantity       integer NOT NULL CHECK (quantity > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    released_at    timestamptz,
    -- Why it was released: 'refused', 'cancelled', 'or21_failed', or an operator's note.
    release_reason text
);
-- One open reservation per line: a claim after a crash reuses it instead of taking more stock.
CREATE UNIQUE INDEX IF NOT EXISTS stock_reservations_open_line
    ON stock_reservations (order_id, order_line_id) WHERE released_at IS NULL;
CREATE INDEX IF NOT EXISTS stock_reservations_open_sku
    ON stock_reservations (sku) WHERE released_at IS NULL;

-- Decisions: why each line was accepted, refused or sent to review ------------------------------
CREATE TABLE IF NOT EXISTS acceptance_decisions (
    decision_id   bigserial PRIMARY KEY,
    order_id      text NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    order_line_id text NOT NULL,
    -- The claim (order_status_history.attempt) the decision was made in.
    attempt       integer,
    -- accept | refuse | review
    action        text NOT NULL CHECK (action IN ('accept', 'refuse', 'review')),
    -- The rule that decided: in_stock, unknown_sku, insufficient_stock, backorder,
    -- price_below_floor, order_total_above_limit, all_lines_accepted (rules off), review_decision
    -- (a person), deadline (rules.on_deadline).
    rule          text NOT NULL,
    sku           text,
    quantity      integer,
    -- What the rule saw.
    available     integer,
    reserved      integer,
    unit_price    numeric,
    floor_price   numeric,
    -- For people: the whole reason in one sentence.
    reason        text NOT NULL,
    -- 'rules', or the person (review --by) whose decision it carries out.
    decided_by    text NOT NULL DEFAULT 'rules',
    decided_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS acceptance_decisions_order
    ON acceptance_decisions (order_id, decided_at, decision_id);

-- The review queue: a person's decision on an order in review -----------------------------------
-- `review accept|refuse` inserts a row here and a `pending_acceptance` history row in one
-- transaction (after locking the order's current status and checking it is `in_review`), so the
-- next run claims the order and carries the decision out through the usual claim, OR21 and
-- validation path. The run marks the row carried out when it records the order's outcome.
CREATE TABLE IF NOT EXISTS review_decisions (
    review_id      bigserial PRIMARY KEY,
    order_id       text NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    -- accept: the lines in `lines` (all when NULL) are accepted, the others refused;
    -- refuse: the lines in `lines` (all when NULL) are refused, the others accepted.
    action         text NOT NULL CHECK (action IN ('accept', 'refuse')),
    lines          text[],
    note           text,
    decided_by     text NOT NULL,
    decided_at     timestamptz NOT NULL DEFAULT now(),
    carried_out_at timestamptz,
    -- The status the run recorded: accepted, refused, cancelled, acceptance_failed.
    outcome        text
);
-- At most one decision waiting per order: a second one is refused while the first is pending.
CREATE UNIQUE INDEX IF NOT EXISTS review_decisions_one_open
    ON review_decisions (order_id) WHERE carried_out_at IS NULL;

-- History: the marketplace's reason code and line states ---------------------------------------
-- `reason_code`: order_state_reason_code when the marketplace refused or cancelled the order
-- (e.g. the automatic refusal at the acceptance deadline). `lines`: the order's lines as the
-- outcome saw them, [{"order_line_id", "offer_sku", "quantity", "state", "accepted"}].
ALTER TABLE order_status_history ADD COLUMN IF NOT EXISTS reason_code text;
ALTER TABLE order_status_history ADD COLUMN IF NOT EXISTS lines jsonb;

-- Statuses: `in_review` (a person decides; never claimable) and `refused` (final) -------------
-- Both fall through order_claimable_at's CASE to NULL, so neither is claimed. The pending views
-- now include orders in review: they still have to be decided before the deadline.
CREATE OR REPLACE VIEW pending_orders AS
SELECT cs.order_id,
       cs.status,
       cs.attempt,
       cs.claimable_at,
       cs.order_created_at,
       now() - cs.order_created_at AS pending_for
FROM order_current_status cs
WHERE cs.status IN ('pending_acceptance', 'accepting', 'in_review')
   OR (cs.status = 'acceptance_failed' AND cs.claimable_at IS NOT NULL);

CREATE OR REPLACE VIEW orders_pending_too_long AS
SELECT order_id, status, attempt, claimable_at, order_created_at, pending_for
FROM pending_orders
WHERE order_created_at < now() - interval '20 hours';

-- Orders in review, oldest first, with the time left to the marketplace's 24-hour deadline.
CREATE OR REPLACE VIEW orders_in_review AS
SELECT cs.order_id,
       cs.order_created_at,
       cs."timestamp"                                   AS in_review_since,
       cs.order_created_at + interval '24 hours'        AS deadline,
       cs.order_created_at + interval '24 hours' - now() AS time_left,
       h.notes
FROM order_current_status cs
JOIN order_status_history h ON h.history_id = cs.history_id
WHERE cs.status = 'in_review';

-- Decisions per UTC day, counted in history rows. A view of its own, so daily_outcomes (migration
-- 2) keeps its shape and that migration can still be re-run as it is.
CREATE OR REPLACE VIEW daily_decisions AS
SELECT ("timestamp" AT TIME ZONE 'UTC')::date            AS day,
       count(*) FILTER (WHERE status = 'accepted')        AS accepted,
       count(*) FILTER (WHERE status = 'refused')         AS refused,
       count(*) FILTER (WHERE status = 'cancelled')       AS cancelled,
       count(*) FILTER (WHERE status = 'in_review')       AS sent_to_review,
       count(*) FILTER (WHERE status = 'acceptance_failed') AS failed_attempts
FROM order_status_history
WHERE status IN ('accepted', 'refused', 'cancelled', 'in_review', 'acceptance_failed')
GROUP BY 1;
