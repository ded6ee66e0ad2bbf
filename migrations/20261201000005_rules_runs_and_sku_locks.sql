-- Acceptance rules (issue 9, the run's side): the run counts of refused and in-review orders, and
-- the per-SKU lock the decide stage takes.
--
-- Safe to re-run: every step is guarded, like the migrations before it.

ALTER TABLE acceptance_runs ADD COLUMN IF NOT EXISTS refused integer NOT NULL DEFAULT 0;
ALTER TABLE acceptance_runs ADD COLUMN IF NOT EXISTS in_review integer NOT NULL DEFAULT 0;

-- Takes a transaction-level advisory lock per distinct SKU, in ascending lock-key order, so two
-- transactions locking overlapping SKU sets always queue instead of deadlocking. Advisory locks,
-- not row locks: the stock relation may be a view (no FOR UPDATE) and a SKU may have no row at
-- all, while what must be serialised is the reading and writing of its reservations. A loop,
-- not one SELECT, because only a loop guarantees the order in which the locks are taken.
-- The first key (a constant) keeps these locks apart from any other advisory locks in the
-- database; two SKUs sharing a hash only wait for each other more often.
CREATE OR REPLACE FUNCTION acceptance_lock_skus(skus text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    key integer;
BEGIN
    FOR key IN SELECT DISTINCT hashtext(s) FROM unnest(skus) AS s WHERE s IS NOT NULL ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(917001, key);
    END LOOP;
END;
$$;
