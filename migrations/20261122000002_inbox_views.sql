-- Views for the people who run the worker: the failure inbox, the orders at risk of missing the
-- marketplace's acceptance deadline, one order's whole story, and a daily summary. The
-- `order-acceptance failures|order|status` commands read the first two; docs/RUNBOOK.md shows
-- psql queries on all of them.
--
-- Plain views over the tables, no stored data: CREATE OR REPLACE makes re-running this file safe,
-- and a later migration may add columns at the end of a view (PostgreSQL refuses to drop or
-- reorder them in place).

-- Every failure with its order's current status. `open` is false once a person resolved it.
CREATE OR REPLACE VIEW failure_inbox AS
SELECT f.failure_id,
       f.related_id,
       f.process_name,
       f.details,
       f.payload,
       f."timestamp",
       f.retryable,
       f.resolved_at,
       f.resolution_note,
       f.resolved_by,
       f.resolved_at IS NULL     AS open,
       now() - f."timestamp"     AS age,
       cs.status                 AS order_status,
       cs."timestamp"            AS order_status_at
FROM process_failures f
LEFT JOIN order_current_status cs ON cs.order_id = f.related_id;

-- What a person still has to look at, newest first in practice (ORDER BY in the query).
CREATE OR REPLACE VIEW open_failures AS
SELECT failure_id, related_id, process_name, details, payload, "timestamp", retryable, age,
       order_status, order_status_at
FROM failure_inbox
WHERE open;

-- Orders the worker still has to decide: waiting for a claim, claimed by a run now, or failed
-- for a transient reason and due to be retried by the worker itself (claimable_at set). An
-- acceptance_failed order left to a person (claimable_at NULL) is in open_failures instead.
-- Age runs from the marketplace's creation date, the start of its 24-hour acceptance window.
CREATE OR REPLACE VIEW pending_orders AS
SELECT cs.order_id,
       cs.status,
       cs.attempt,
       cs.claimable_at,
       cs.order_created_at,
       now() - cs.order_created_at AS pending_for
FROM order_current_status cs
WHERE cs.status IN ('pending_acceptance', 'accepting')
   OR (cs.status = 'acceptance_failed' AND cs.claimable_at IS NOT NULL);

-- Pending orders close to the deadline: the marketplace refuses an order left undecided 24 h
-- after its creation. A view cannot read the worker's configuration, so the threshold is the
-- default of `alerts.pending_after` (20 hours), hard-coded; `order-acceptance status` uses the
-- configured value instead.
CREATE OR REPLACE VIEW orders_pending_too_long AS
SELECT order_id, status, attempt, claimable_at, order_created_at, pending_for
FROM pending_orders
WHERE order_created_at < now() - interval '20 hours';

-- One order's story as one stream of events, oldest first when ordered by (at, kind_order, id):
-- status changes, failures recorded for it, and every API call made about it.
CREATE OR REPLACE VIEW order_timeline AS
SELECT h.order_id,
       h."timestamp"   AS at,
       'status'::text  AS kind,
       h.history_id    AS id,
       h.status        AS what,
       h.attempt,
       h.notes         AS detail
FROM order_status_history h
UNION ALL
SELECT f.related_id,
       f."timestamp",
       'failure',
       f.failure_id,
       CASE WHEN f.resolved_at IS NULL THEN 'open' ELSE 'resolved' END,
       NULL,
       f.details
FROM process_failures f
WHERE f.related_id IS NOT NULL
UNION ALL
SELECT c.related_id,
       c."timestamp",
       'api_call',
       c.call_id,
       c.endpoint || ' ' || coalesce(c.status_code::text, 'no response'),
       c.attempt,
       coalesce(c.error, c.method || ' ' || c.path)
FROM api_calls c
WHERE c.related_id IS NOT NULL;

-- Outcomes per UTC day, counted in history rows: an order that failed twice before being
-- accepted adds 2 to failed_attempts and 1 to accepted.
CREATE OR REPLACE VIEW daily_outcomes AS
SELECT ("timestamp" AT TIME ZONE 'UTC')::date                  AS day,
       count(DISTINCT order_id) FILTER (WHERE status = 'accepting') AS orders_claimed,
       count(*) FILTER (WHERE status = 'accepted')               AS accepted,
       count(*) FILTER (WHERE status = 'cancelled')              AS cancelled,
       count(*) FILTER (WHERE status = 'acceptance_failed')      AS failed_attempts
FROM order_status_history
WHERE status IN ('accepting', 'accepted', 'cancelled', 'acceptance_failed')
GROUP BY 1;
