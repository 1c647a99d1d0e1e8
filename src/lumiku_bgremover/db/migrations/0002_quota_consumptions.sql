-- 0002_quota_consumptions: one row per use of a subscription's daily quota, keyed by the
-- request's idempotency key, so a redelivered request never counts twice and a failed
-- single image gives its use back exactly once (released_at set once).
--
-- daily_usage stays the counter the quota is checked against; this table is its journal:
-- for every (subscription_id, business_date, tier), daily_usage.used equals the number of
-- rows here with released_at NULL.

CREATE TABLE quota_consumptions (
    idempotency_key  text PRIMARY KEY CHECK (idempotency_key <> ''),
    subscription_id  uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    user_id          text NOT NULL CHECK (user_id <> ''),
    business_date    date NOT NULL,
    -- Industry is always paid in credits, so it never uses quota.
    tier             text NOT NULL CHECK (tier IN ('basic', 'standard', 'professional')),
    released_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quota_consumptions_usage ON quota_consumptions (subscription_id, business_date);

