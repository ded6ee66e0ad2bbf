-- Degraded runs (issue 10): a run whose import failed (no OR11 page could be read) ends
-- `degraded` instead of `completed`, so `status` and the run history tell the truth.
--
-- Safe to re-run: whatever check on `result` the table has (named by PostgreSQL in migration 1)
-- is dropped and the full list is added again under a name of its own.

DO $$
DECLARE
    old_check record;
BEGIN
    FOR old_check IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = 'acceptance_runs'::regclass AND contype = 'c'
          AND pg_get_constraintdef(oid) LIKE '%result%'
    LOOP
        EXECUTE format('ALTER TABLE acceptance_runs DROP CONSTRAINT %I', old_check.conname);
    END LOOP;
END $$;

-- running, completed, failed (a fatal error), interrupted (shutdown before the end),
-- degraded (the import failed; the orders already stored were still worked on)
ALTER TABLE acceptance_runs ADD CONSTRAINT acceptance_runs_result_known
    CHECK (result IN ('running', 'completed', 'failed', 'interrupted', 'degraded'));
