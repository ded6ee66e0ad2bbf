-- Several shops in one deployment (issue 18): every table that names an order names its shop too,
-- so two marketplaces may both send order "1001" and each is stored, decided and shown apart.
--
-- A one-shop deployment changes nothing it can see: every `shop` column defaults to 'default'
-- (the `[marketplace]` shop), so an upstream system that inserts `orders` and
-- `order_status_history` rows without naming a shop keeps working, and every view keeps its
-- columns (a `shop` column is added at the end of each). An order naming a shop this database
-- does not know is refused by the foreign key to `shops`, which the worker fills from its
-- configuration at start-up.
--
-- The stock stays one relation (`rules.stock_relation`) and the reservations one pool: a line's
-- SKU is mapped through `offer_sku_map` when its shop has a row for it, and reservations and the
-- per-SKU locks are keyed by the stock's SKU, whichever shop asks.
--
-- Safe to re-run: every step is guarded, like the migrations before it. This file holds the
-- current definition of every view and of the projection's triggers: the earlier migrations can
-- no longer be re-run by hand over it (their views lack `shop`, which PostgreSQL will not drop,
-- and their triggers key by order id alone): re-run this file instead.

-- Shops ----------------------------------------------------------------------------------------
-- One row per configured shop, written by the worker at start-up: the names orders may carry, and
-- each shop's acceptance window and alert threshold for the views (they replace the one-row
-- acceptance_settings of migration 6).
CREATE TABLE IF NOT EXISTS shops (
    shop              text PRIMARY KEY CHECK (shop ~ '^[a-z][a-z0-9_]{0,39}$'),
    acceptance_window interval NOT NULL DEFAULT interval '24 hours',
    pending_after     interval NOT NULL DEFAULT interval '20 hours',
    updated_at        timestamptz NOT NULL DEFAULT now()
);
DO $$
BEGIN
    IF to_regclass('acceptance_settings') IS NOT NULL THEN
        INSERT INTO shops (shop, acceptance_window, pending_after)
        SELECT 'default', s.acceptance_window, s.pending_after FROM acceptance_settings s
        ON CONFLICT (shop) DO NOTHING;
    END IF;
END
$$;
INSERT INTO shops (shop) VALUES ('default') ON CONFLICT (shop) DO NOTHING;

-- The window the views count with for a shop; 24 hours for a shop without a row.
CREATE OR REPLACE FUNCTION acceptance_window(shop_name text) RETURNS interval
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT acceptance_window FROM shops WHERE shop = shop_name), interval '24 hours')
$$;
-- Migration 6's form: the default shop's window.
CREATE OR REPLACE FUNCTION acceptance_window() RETURNS interval
LANGUAGE sql STABLE AS $$
    SELECT acceptance_window('default')
$$;

-- A `shop` column on every table that names an order ------------------------------------------
ALTER TABLE orders ADD COLUMN IF NOT EXISTS shop text NOT NULL DEFAULT 'default';
ALTER TABLE order_status_history ADD COLUMN IF NOT EXISTS shop text NOT NULL DEFAULT 'default';
ALTER TABLE order_current_status ADD COLUMN IF NOT EXISTS shop text NOT NULL DEFAULT 'default';
ALTER TABLE stock_reservations ADD COLUMN IF NOT EXISTS shop text NOT NULL DEFAULT 'default';
ALTER TABLE acceptance_decisions ADD COLUMN IF NOT EXISTS shop text NOT NULL DEFAULT 'default';
ALTER TABLE review_decisions ADD COLUMN IF NOT EXISTS shop text NOT NULL DEFAULT 'default';
ALTER TABLE process_failures ADD COLUMN IF NOT EXISTS shop text NOT NULL DEFAULT 'default';
ALTER TABLE api_calls ADD COLUMN IF NOT EXISTS shop text NOT NULL DEFAULT 'default';
ALTER TABLE acceptance_runs ADD COLUMN IF NOT EXISTS shop text NOT NULL DEFAULT 'default';

-- Keys: (shop, order_id) ----------------------------------------------------------------------
-- The foreign keys to orders(order_id) go first (whatever PostgreSQL or an adopted database named
-- them), then orders and the projection get their two-column keys, then the children point at
-- (shop, order_id). NOT VALID, as in migration 1: new rows are bound, legacy ones are not checked.
DO $$
DECLARE
    fk record;
    pk name;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'orders_shop_order_key') THEN
        FOR fk IN
            SELECT conname, conrelid::regclass AS tab FROM pg_constraint
            WHERE confrelid = 'orders'::regclass AND contype = 'f'
        LOOP
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.tab, fk.conname);
        END LOOP;
        SELECT conname INTO pk FROM pg_constraint
        WHERE conrelid = 'orders'::regclass AND contype = 'p';
        IF pk IS NOT NULL THEN
            EXECUTE format('ALTER TABLE orders DROP CONSTRAINT %I', pk);
        END IF;
        ALTER TABLE orders ADD CONSTRAINT orders_shop_order_key PRIMARY KEY (shop, order_id);

        SELECT conname INTO pk FROM pg_constraint
        WHERE conrelid = 'order_current_status'::regclass AND contype = 'p';
        IF pk IS NOT NULL THEN
            EXECUTE format('ALTER TABLE order_current_status DROP CONSTRAINT %I', pk);
        END IF;
        ALTER TABLE order_current_status
            ADD CONSTRAINT order_current_status_shop_order_key PRIMARY KEY (shop, order_id);

        ALTER TABLE order_status_history ADD CONSTRAINT order_status_history_order_fkey
            FOREIGN KEY (shop, order_id) REFERENCES orders (shop, order_id) ON DELETE CASCADE NOT VALID;
        ALTER TABLE order_current_status ADD CONSTRAINT order_current_status_order_fkey
            FOREIGN KEY (shop, order_id) REFERENCES orders (shop, order_id) ON DELETE CASCADE NOT VALID;
        ALTER TABLE stock_reservations ADD CONSTRAINT stock_reservations_order_fkey
            FOREIGN KEY (shop, order_id) REFERENCES orders (shop, order_id) ON DELETE CASCADE NOT VALID;
        ALTER TABLE acceptance_decisions ADD CONSTRAINT acceptance_decisions_order_fkey
            FOREIGN KEY (shop, order_id) REFERENCES orders (shop, order_id) ON DELETE CASCADE NOT VALID;
        ALTER TABLE review_decisions ADD CONSTRAINT review_decisions_order_fkey
            FOREIGN KEY (shop, order_id) REFERENCES orders (shop, order_id) ON DELETE CASCADE NOT VALID;
    END IF;
    -- An order of a shop the worker was never configured for is refused, with this name in the
    -- error: `orders_shop_is_configured`.
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'orders_shop_is_configured') THEN
        ALTER TABLE orders ADD CONSTRAINT orders_shop_is_configured
            FOREIGN KEY (shop) REFERENCES shops (shop) NOT VALID;
    END IF;
END
$$;

-- Said before the foreign key says it, in words that tell what to do.
CREATE OR REPLACE FUNCTION orders_require_known_shop() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM shops WHERE shop = NEW.shop) THEN
        RAISE EXCEPTION 'order % names shop %, which this database does not know (orders_shop_is_configured)', NEW.order_id, NEW.shop
            USING ERRCODE = 'foreign_key_violation',
                  HINT = format('Configure [shops.%s] and start the worker (or run `order-acceptance migrate`) so that it registers the shop, or leave shop out for the default shop.', NEW.shop);
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS orders_known_shop ON orders;
CREATE TRIGGER orders_known_shop
    BEFORE INSERT OR UPDATE OF shop ON orders
    FOR EACH ROW EXECUTE FUNCTION orders_require_known_shop();

-- `order ID` and the console's search look an id up in every shop.
CREATE INDEX IF NOT EXISTS orders_order_id ON orders (order_id);

-- One open reservation and one waiting review decision per order line / order, per shop.
DROP INDEX IF EXISTS stock_reservations_open_line;
CREATE UNIQUE INDEX IF NOT EXISTS stock_reservations_open_shop_line
    ON stock_reservations (shop, order_id, order_line_id) WHERE released_at IS NULL;
DROP INDEX IF EXISTS review_decisions_one_open;
CREATE UNIQUE INDEX IF NOT EXISTS review_decisions_one_open_per_shop
    ON review_decisions (shop, order_id) WHERE carried_out_at IS NULL;

-- The claim reads one shop's due orders, oldest first.
DROP INDEX IF EXISTS order_current_status_claimable;
CREATE INDEX IF NOT EXISTS order_current_status_claimable_by_shop
    ON order_current_status (shop, order_created_at, order_id)
    WHERE claimable_at IS NOT NULL;

CREATE INDEX IF NOT EXISTS acceptance_runs_shop_started_at
    ON acceptance_runs (shop, started_at DESC);

-- The offer SKU map ------------------------------------------------------------------------------
-- Marketplaces name one product differently: a line's SKU (offer_sku, else product_sku) is
-- looked up here for its shop, and the stock SKU found is what the rules read, lock and reserve.
-- A line with no row keeps its own SKU; a row naming a SKU the stock lacks makes the line unknown.
CREATE TABLE IF NOT EXISTS offer_sku_map (
    shop      text NOT NULL REFERENCES shops (shop),
    offer_sku text NOT NULL,
    sku       text NOT NULL,
    PRIMARY KEY (shop, offer_sku)
);

-- The projection, per shop -----------------------------------------------------------------------
CREATE OR REPLACE FUNCTION project_order_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO order_current_status AS current
        (shop, order_id, history_id, status, "timestamp", attempt, claimable_at, order_created_at,
         run_id)
    SELECT DISTINCT ON (n.shop, n.order_id)
           n.shop, n.order_id, n.history_id, n.status, coalesce(n."timestamp", '-infinity'),
           coalesce(n.attempt, 0),
           CASE WHEN n.status = 'accepting' AND n.run_id IS NOT NULL THEN NULL
                ELSE order_claimable_at(n.status, n."timestamp", n.next_attempt_at) END,
           coalesce(o.placed_at, o.created_at),
           CASE WHEN n.status = 'accepting' THEN n.run_id END
    FROM inserted n
    JOIN orders o ON o.shop = n.shop AND o.order_id = n.order_id
    ORDER BY n.shop, n.order_id, coalesce(n."timestamp", '-infinity') DESC, n.history_id DESC
    ON CONFLICT (shop, order_id) DO UPDATE SET
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

CREATE OR REPLACE FUNCTION orders_project_created_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE order_current_status
    SET order_created_at = coalesce(NEW.placed_at, NEW.created_at)
    WHERE shop = NEW.shop AND order_id = NEW.order_id
      AND order_created_at IS DISTINCT FROM coalesce(NEW.placed_at, NEW.created_at);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION reject_history_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'order_status_history is append-only: insert a new row for order % of shop % instead of updating history row %',
        OLD.order_id, OLD.shop, OLD.history_id
        USING ERRCODE = 'restrict_violation';
END
$$;

-- Views: the same columns, then `shop` ----------------------------------------------------------
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
       cs."timestamp"            AS order_status_at,
       f.shop
FROM process_failures f
LEFT JOIN order_current_status cs ON cs.shop = f.shop AND cs.order_id = f.related_id;

CREATE OR REPLACE VIEW open_failures AS
SELECT failure_id, related_id, process_name, details, payload, "timestamp", retryable, age,
       order_status, order_status_at, shop
FROM failure_inbox
WHERE open;

CREATE OR REPLACE VIEW pending_orders AS
SELECT cs.order_id,
       cs.status,
       cs.attempt,
       cs.claimable_at,
       cs.order_created_at,
       now() - cs.order_created_at AS pending_for,
       cs.shop
FROM order_current_status cs
WHERE cs.status IN ('pending_acceptance', 'accepting', 'in_review')
   OR (cs.status = 'acceptance_failed' AND cs.claimable_at IS NOT NULL);

CREATE OR REPLACE VIEW orders_pending_too_long AS
SELECT p.order_id, p.status, p.attempt, p.claimable_at, p.order_created_at, p.pending_for, p.shop
FROM pending_orders p
LEFT JOIN shops s ON s.shop = p.shop
WHERE p.order_created_at < now() - coalesce(s.pending_after, interval '20 hours');

CREATE OR REPLACE VIEW orders_in_review AS
SELECT cs.order_id,
       cs.order_created_at,
       cs."timestamp"                                            AS in_review_since,
       cs.order_created_at + acceptance_window(cs.shop)          AS deadline,
       cs.order_created_at + acceptance_window(cs.shop) - now()  AS time_left,
       h.notes,
       cs.shop
FROM order_current_status cs
JOIN order_status_history h ON h.history_id = cs.history_id
WHERE cs.status = 'in_review';

CREATE OR REPLACE VIEW order_timeline AS
SELECT h.order_id,
       h."timestamp"   AS at,
       'status'::text  AS kind,
       h.history_id    AS id,
       h.status        AS what,
       h.attempt,
       h.notes         AS detail,
       h.shop
FROM order_status_history h
UNION ALL
SELECT f.related_id,
       f."timestamp",
       'failure',
       f.failure_id,
       CASE WHEN f.resolved_at IS NULL THEN 'open' ELSE 'resolved' END,
       NULL,
       f.details,
       f.shop
FROM process_failures f
WHERE f.related_id IS NOT NULL
UNION ALL
SELECT c.related_id,
       c."timestamp",
       'api_call',
       c.call_id,
       c.endpoint || ' ' || coalesce(c.status_code::text, 'no response'),
       c.attempt,
       coalesce(c.error, c.method || ' ' || c.path),
       c.shop
FROM api_calls c
WHERE c.related_id IS NOT NULL;

-- Counted per (shop, order): the same id on two shops is two orders.
CREATE OR REPLACE VIEW daily_outcomes AS
SELECT ("timestamp" AT TIME ZONE 'UTC')::date                  AS day,
       count(DISTINCT (shop, order_id)) FILTER (WHERE status = 'accepting') AS orders_claimed,
       count(*) FILTER (WHERE status = 'accepted')               AS accepted,
       count(*) FILTER (WHERE status = 'cancelled')              AS cancelled,
       count(*) FILTER (WHERE status = 'acceptance_failed')      AS failed_attempts
FROM order_status_history
WHERE status IN ('accepting', 'accepted', 'cancelled', 'acceptance_failed')
GROUP BY 1;

CREATE OR REPLACE VIEW live_runs AS
SELECT r.run_id,
       r.worker_id,
       r.started_at,
       r.heartbeat_at,
       r.held_until,
       (SELECT count(*) FROM order_current_status cs
        WHERE cs.run_id = r.run_id AND cs.status = 'accepting') AS orders_held,
       r.shop
FROM acceptance_runs r
WHERE r.released_at IS NULL AND r.finished_at IS NULL AND r.held_until > now();

-- The shops table carries each shop's window now.
DROP TABLE IF EXISTS acceptance_settings;
