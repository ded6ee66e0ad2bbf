-- The operator console (issue 17): accounts, sessions, failed logins, the audit of every action,
-- and the indexes its keyset-paginated lists read.
--
-- Safe to re-run: every step is guarded, like the migrations before it.

-- Accounts: `order-acceptance console user add|list|disable|password`, or an admin in the page.
CREATE TABLE IF NOT EXISTS console_users (
    user_id             bigserial PRIMARY KEY,
    name                text NOT NULL UNIQUE
        CHECK (btrim(name) = name AND name <> '' AND length(name) <= 64),
    -- viewer: reads; operator: also decides reviews and works the inbox; admin: also manages users.
    role                text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    -- Argon2id, PHC string ($argon2id$v=19$...). Never the password.
    password_hash       text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    -- Set: the user can no longer log in, and their sessions are gone.
    disabled_at         timestamptz
);

-- Sessions: the cookie holds a random token; only its SHA-256 is stored, so a copy of this table
-- opens no session.
CREATE TABLE IF NOT EXISTS console_sessions (
    token_sha256 bytea PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES console_users (user_id) ON DELETE CASCADE,
    -- Carried by every form of the session and compared on each POST.
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    address      text
);
CREATE INDEX IF NOT EXISTS console_sessions_user ON console_sessions (user_id);
CREATE INDEX IF NOT EXISTS console_sessions_last_seen ON console_sessions (last_seen_at);

-- Failed logins, counted per name and per address over a window to slow down guessing.
CREATE TABLE IF NOT EXISTS console_login_failures (
    failure_id bigserial PRIMARY KEY,
    user_name  text NOT NULL,
    address    text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS console_login_failures_user ON console_login_failures (user_name, at);
CREATE INDEX IF NOT EXISTS console_login_failures_address ON console_login_failures (address, at);

-- The audit: who did what, when, from where, and how it ended. Append-only.
CREATE TABLE IF NOT EXISTS console_audit (
    audit_id bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,
    -- login, login_failed, logout, review_accept, review_refuse, failure_resolve, failure_retry,
    -- failures_bulk_resolve, failures_bulk_retry, user_add, user_disable, user_password
    action   text NOT NULL,
    -- The order id, failure id, filter or user the action was about.
    subject  text,
    -- ok, or what stopped it.
    outcome  text NOT NULL,
    detail   text,
    address  text
);
CREATE INDEX IF NOT EXISTS console_audit_at ON console_audit (at DESC, audit_id DESC);

CREATE OR REPLACE FUNCTION reject_console_audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'console_audit is append-only: audit row % cannot be changed', OLD.audit_id
        USING ERRCODE = 'restrict_violation';
END
$$;
DROP TRIGGER IF EXISTS console_audit_append_only ON console_audit;
CREATE TRIGGER console_audit_append_only
    BEFORE UPDATE OR DELETE ON console_audit
    FOR EACH ROW EXECUTE FUNCTION reject_console_audit_change();

-- The console's lists ---------------------------------------------------------------------------
-- The review queue, oldest first, a page at a time: only orders in review are in this index.
CREATE INDEX IF NOT EXISTS order_current_status_in_review
    ON order_current_status (order_created_at, order_id)
    WHERE status = 'in_review';
-- The failure inbox, newest first, a page at a time.
CREATE INDEX IF NOT EXISTS process_failures_open_keyset
    ON process_failures ("timestamp" DESC, failure_id DESC)
    WHERE resolved_at IS NULL;
-- The 14-day chart counts history rows by day without reading older history.
CREATE INDEX IF NOT EXISTS order_status_history_timestamp
    ON order_status_history ("timestamp") INCLUDE (status);
