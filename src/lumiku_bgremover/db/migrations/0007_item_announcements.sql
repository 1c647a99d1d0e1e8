-- 0007_item_announcements: an outbox mark per image, as 0004 added one per batch.
-- `announced_at` records that the image's `item.done` or `item.failed` went out. A batch
-- is announced complete only after every ended image was: images whose event a crash
-- (or a NATS outage) swallowed are announced by whoever finishes the batch, before
-- `batch.completed`, and a late redelivery does not publish a fact already announced.
-- The events need what only the request knew: the requester's id of each image
-- (`source_id`) and the batch's remove-then-upscale step (`then_upscale_scale`).

ALTER TABLE batch_items
    ADD COLUMN source_id text,
    ADD COLUMN announced_at timestamptz,
    ADD CONSTRAINT batch_items_announced_when_ended CHECK (
        announced_at IS NULL OR status IN ('done', 'failed')
    );

ALTER TABLE batches
    ADD COLUMN then_upscale_scale smallint CHECK (then_upscale_scale IN (2, 4));

-- Images that ended before this migration were announced as they ended.
UPDATE batch_items SET announced_at = COALESCE(finished_at, now())
WHERE status IN ('done', 'failed');

CREATE INDEX batch_items_unannounced ON batch_items (batch_id)
    WHERE announced_at IS NULL AND status IN ('done', 'failed');
