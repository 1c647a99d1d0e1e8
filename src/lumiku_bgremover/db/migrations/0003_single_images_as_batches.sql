-- 0003_single_images_as_batches: a single image is processed as a batch of one, so one
-- code path claims, finishes, fails, refunds and completes every image. The batch says how
-- it was requested (mode) and, when a subscription paid, which quota use to give back if the
-- image fails. `single_jobs` becomes a view over those batches and their one item, so the
-- spec's single-job record stays queryable without a second copy of the state.

ALTER TABLE batches
    ADD COLUMN mode text NOT NULL DEFAULT 'batch' CHECK (mode IN ('batch', 'single')),
    ADD COLUMN subscription_id uuid REFERENCES subscriptions (id),
    ADD COLUMN quota_key text,
    ADD COLUMN lane text NOT NULL DEFAULT 'bulk' CHECK (lane IN ('interactive', 'bulk')),
    ADD CONSTRAINT batches_single_is_one CHECK (mode = 'batch' OR total_items = 1),
    ADD CONSTRAINT batches_subscription_pricing CHECK (
        (pricing_type = 'subscription' AND mode = 'single'
            AND subscription_id IS NOT NULL AND quota_key IS NOT NULL AND credits_charged = 0)
        OR (pricing_type = 'credits' AND subscription_id IS NULL AND quota_key IS NULL)
    );

ALTER TABLE batch_items
    ADD COLUMN started_at timestamptz;

CREATE INDEX batch_items_pending ON batch_items (batch_id) WHERE status = 'pending';

DROP TABLE single_jobs;

CREATE VIEW single_jobs AS
SELECT
    b.id, b.request_id, b.user_id, b.tier, i.status, b.pricing_type, b.subscription_id,
    b.quota_key, b.credits_charged, b.credits_refunded, b.options, b.correlation,
    i.filename, i.source, i.declared_size, i.attempts, i.result_bucket, i.result_key,
    i.result_size, i.width, i.height, i.content_type, i.engine, i.model, i.processing_ms,
    i.cost_idr, i.error_code, i.error_message, b.created_at, i.updated_at, i.finished_at
FROM batches b
JOIN batch_items i ON i.batch_id = b.id
WHERE b.mode = 'single';
