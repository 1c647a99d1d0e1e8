-- 0001_initial: credits, subscriptions and quotas, batches and their items, single jobs,
-- per-user integration settings.
--
-- Conventions: snake_case; money and counts never negative (CHECKs, so no concurrency can
-- break them); statuses and tiers are text with CHECKs (tiers: basic, standard,
-- professional, industry); every mutable row has created_at/updated_at, and a trigger keeps
-- updated_at current on UPDATE. Unnamed column CHECKs get PostgreSQL's default names
-- (<table>_<column>_check); multi-column ones are named here.

CREATE FUNCTION touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- Credits ------------------------------------------------------------------------------

CREATE TABLE credit_accounts (
    user_id     text PRIMARY KEY CHECK (user_id <> ''),
    balance     bigint NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per balance change: positive amounts credit the account, negative ones charge it.
CREATE TABLE credit_ledger (
    id               bigserial PRIMARY KEY,
    user_id          text NOT NULL REFERENCES credit_accounts (user_id),
    amount           bigint NOT NULL CHECK (amount <> 0),
    balance_after    bigint NOT NULL CHECK (balance_after >= 0),
    reason           text NOT NULL CHECK (
        reason IN ('grant', 'purchase', 'batch_charge', 'single_charge', 'refund', 'adjustment')
    ),
    reference_type   text CHECK (reference_type <> ''),
    reference_id     text CHECK (reference_id <> ''),
    idempotency_key  text NOT NULL UNIQUE CHECK (idempotency_key <> ''),
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Charges take credits out, grants, purchases and refunds put them in; adjustments either.
    CONSTRAINT credit_ledger_amount_sign CHECK (
        CASE
            WHEN reason IN ('batch_charge', 'single_charge') THEN amount < 0
            WHEN reason IN ('grant', 'purchase', 'refund') THEN amount > 0
            ELSE true
        END
    ),
    CONSTRAINT credit_ledger_reference_pair CHECK ((reference_type IS NULL) = (reference_id IS NULL))
);
CREATE INDEX credit_ledger_user_created ON credit_ledger (user_id, created_at);
CREATE INDEX credit_ledger_reference ON credit_ledger (reference_type, reference_id);

-- Subscriptions and daily quotas -------------------------------------------------------------

CREATE TABLE subscriptions (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             text NOT NULL CHECK (user_id <> ''),
    plan                text NOT NULL CHECK (plan IN ('starter', 'pro')),
    status              text NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'cancelled', 'expired')),
    started_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    daily_quota         integer NOT NULL CHECK (daily_quota > 0),
    -- The part of daily_quota usable at the professional tier; NULL: no separate cap.
    professional_quota  integer CHECK (professional_quota >= 0),
    allowed_tiers       text[] NOT NULL CHECK (
        cardinality(allowed_tiers) > 0
        AND array_ndims(allowed_tiers) = 1
        AND allowed_tiers <@ ARRAY['basic', 'standard', 'professional', 'industry']::text[]
    ),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_period CHECK (expires_at > started_at),
    CONSTRAINT subscriptions_professional_within_daily CHECK (professional_quota <= daily_quota)
);
CREATE UNIQUE INDEX subscriptions_one_active_per_user ON subscriptions (user_id)
    WHERE status = 'active';
CREATE INDEX subscriptions_user_started ON subscriptions (user_id, started_at);

-- Removals used per subscription, business day (in the configured time zone) and tier.
CREATE TABLE daily_usage (
    subscription_id  uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    business_date    date NOT NULL,
    tier             text NOT NULL
                     CHECK (tier IN ('basic', 'standard', 'professional', 'industry')),
    used             integer NOT NULL DEFAULT 0 CHECK (used >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, business_date, tier)
);

-- Batches ----------------------------------------------------------------------------

CREATE TABLE batches (
    id                 text PRIMARY KEY CHECK (id <> ''),
    request_id         text NOT NULL UNIQUE CHECK (request_id <> ''),  -- idempotency key
    user_id            text NOT NULL CHECK (user_id <> ''),
    tier               text NOT NULL
                       CHECK (tier IN ('basic', 'standard', 'professional', 'industry')),
    status             text NOT NULL DEFAULT 'accepted' CHECK (
        status IN ('accepted', 'processing', 'finalizing', 'completed', 'cancelled', 'failed')
    ),
    pricing_type       text NOT NULL DEFAULT 'credits'
                       CHECK (pricing_type IN ('credits', 'subscription')),
    total_items        integer NOT NULL CHECK (total_items BETWEEN 1 AND 500),
    succeeded          integer NOT NULL DEFAULT 0 CHECK (succeeded >= 0),
    failed             integer NOT NULL DEFAULT 0 CHECK (failed >= 0),
    cancelled          integer NOT NULL DEFAULT 0 CHECK (cancelled >= 0),
    credits_per_image  integer NOT NULL CHECK (credits_per_image >= 0),
    base_total         bigint NOT NULL CHECK (base_total >= 0),
    discount_pct       smallint NOT NULL DEFAULT 0 CHECK (discount_pct BETWEEN 0 AND 100),
    discount           bigint NOT NULL DEFAULT 0 CHECK (discount >= 0),
    credits_charged    bigint NOT NULL DEFAULT 0 CHECK (credits_charged >= 0),
    credits_refunded   bigint NOT NULL DEFAULT 0 CHECK (credits_refunded >= 0),
    options            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'),
    correlation        jsonb CHECK (jsonb_typeof(correlation) = 'object'),
    archive_bucket     text,
    archive_key        text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    completed_at       timestamptz,
    CONSTRAINT batches_counts_within_total CHECK (succeeded + failed + cancelled <= total_items),
    CONSTRAINT batches_discount_within_base CHECK (discount <= base_total),
    CONSTRAINT batches_refund_within_charge CHECK (credits_refunded <= credits_charged),
    CONSTRAINT batches_archive_pair CHECK ((archive_bucket IS NULL) = (archive_key IS NULL)),
    CONSTRAINT batches_completed_when_final CHECK (
        completed_at IS NULL OR status IN ('completed', 'cancelled', 'failed')
    )
);
CREATE INDEX batches_user_created ON batches (user_id, created_at);

CREATE TABLE batch_items (
    id              text PRIMARY KEY CHECK (id <> ''),
    batch_id        text NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    idx             integer NOT NULL CHECK (idx >= 0 AND idx < 500),
    filename        text NOT NULL,
    source          jsonb NOT NULL CHECK (jsonb_typeof(source) = 'object'),
    declared_size   bigint CHECK (declared_size >= 0),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'done', 'failed', 'cancelled')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    result_bucket   text,
    result_key      text,
    result_size     bigint CHECK (result_size >= 0),
    width           integer CHECK (width > 0),
    height          integer CHECK (height > 0),
    content_type    text,
    engine          text,
    model           text,
    processing_ms   integer CHECK (processing_ms >= 0),
    cost_idr        numeric CHECK (cost_idr >= 0),
    error_code      text,
    error_message   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CONSTRAINT batch_items_position UNIQUE (batch_id, idx),
    CONSTRAINT batch_items_result_pair CHECK ((result_bucket IS NULL) = (result_key IS NULL)),
    CONSTRAINT batch_items_done_has_result CHECK (status <> 'done' OR result_key IS NOT NULL)
);
CREATE INDEX batch_items_batch_status ON batch_items (batch_id, status);

-- Single images ----------------------------------------------------------------------------

-- One image outside a batch: the job is its own item (same columns as batch_items), paid by
-- a subscription's quota for quota_date, or in credits.
CREATE TABLE single_jobs (
    id                text PRIMARY KEY CHECK (id <> ''),
    request_id        text NOT NULL UNIQUE CHECK (request_id <> ''),  -- idempotency key
    user_id           text NOT NULL CHECK (user_id <> ''),
    tier              text NOT NULL
                      CHECK (tier IN ('basic', 'standard', 'professional', 'industry')),
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'processing', 'done', 'failed', 'cancelled')),
    pricing_type      text NOT NULL CHECK (pricing_type IN ('credits', 'subscription')),
    subscription_id   uuid REFERENCES subscriptions (id),
    quota_date        date,
    credits_charged   bigint NOT NULL DEFAULT 0 CHECK (credits_charged >= 0),
    credits_refunded  bigint NOT NULL DEFAULT 0 CHECK (credits_refunded >= 0),
    options           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'),
    correlation       jsonb CHECK (jsonb_typeof(correlation) = 'object'),
    filename          text NOT NULL,
    source            jsonb NOT NULL CHECK (jsonb_typeof(source) = 'object'),
    declared_size     bigint CHECK (declared_size >= 0),
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    result_bucket     text,
    result_key        text,
    result_size       bigint CHECK (result_size >= 0),
    width             integer CHECK (width > 0),
    height            integer CHECK (height > 0),
    content_type      text,
    engine            text,
    model             text,
    processing_ms     integer CHECK (processing_ms >= 0),
    cost_idr          numeric CHECK (cost_idr >= 0),
    error_code        text,
    error_message     text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    CONSTRAINT single_jobs_refund_within_charge CHECK (credits_refunded <= credits_charged),
    CONSTRAINT single_jobs_subscription_pricing CHECK (
        (pricing_type = 'subscription'
            AND subscription_id IS NOT NULL AND quota_date IS NOT NULL AND credits_charged = 0)
        OR (pricing_type = 'credits' AND subscription_id IS NULL AND quota_date IS NULL)
    ),
    CONSTRAINT single_jobs_result_pair CHECK ((result_bucket IS NULL) = (result_key IS NULL)),
    CONSTRAINT single_jobs_done_has_result CHECK (status <> 'done' OR result_key IS NOT NULL)
);
CREATE INDEX single_jobs_user_created ON single_jobs (user_id, created_at);
CREATE INDEX single_jobs_subscription ON single_jobs (subscription_id)
    WHERE subscription_id IS NOT NULL;

-- Integrations -----------------------------------------------------------------------------

CREATE TABLE user_integration_settings (
    user_id             text PRIMARY KEY CHECK (user_id <> ''),
    default_tier        text NOT NULL DEFAULT 'standard'
                        CHECK (default_tier IN ('basic', 'standard', 'professional', 'industry')),
    avatar_auto_remove  boolean NOT NULL DEFAULT false,
    pose_auto_remove    boolean NOT NULL DEFAULT false,
    upscaler_pipeline   text NOT NULL DEFAULT 'none' CHECK (
        upscaler_pipeline IN ('none', 'remove_then_upscale', 'upscale_then_remove')
    ),
    output_options      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(output_options) = 'object'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- updated_at follows every UPDATE ------------------------------------------------------------

CREATE TRIGGER credit_accounts_touch BEFORE UPDATE ON credit_accounts
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER subscriptions_touch BEFORE UPDATE ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER daily_usage_touch BEFORE UPDATE ON daily_usage
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER batches_touch BEFORE UPDATE ON batches
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER batch_items_touch BEFORE UPDATE ON batch_items
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER single_jobs_touch BEFORE UPDATE ON single_jobs
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE TRIGGER user_integration_settings_touch BEFORE UPDATE ON user_integration_settings
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
