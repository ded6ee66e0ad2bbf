-- The rate gate state the replicas of one shop share: one row per shop and endpoint group,
-- read at the start of each run and on each closing, written when it changes (never per
-- request). Readers treat every value as a hint to check, not a fact: a replica with another
-- clock or an old version may have written it.
CREATE TABLE IF NOT EXISTS rate_gates (
    shop text NOT NULL,
    api_group text NOT NULL,
    -- The marketplace asked this group's calls to wait until then (Retry-After).
    closed_until timestamptz,
    -- The learned pace when written, and the rate it climbs back towards (requests/s).
    learned_rate double precision,
    last_max_rate double precision,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL,
    PRIMARY KEY (shop, api_group)
);
