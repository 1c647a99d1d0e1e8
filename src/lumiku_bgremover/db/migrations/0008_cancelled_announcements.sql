-- 0008_cancelled_announcements: a cancelled image is announced like a failed one.
-- The contract promises every image's end before `batch.completed`; a cancelled image's
-- end is `item.failed` with the code `cancelled`, published by the cancel and marked
-- with the same outbox column as done and failed images (0007).

ALTER TABLE batch_items DROP CONSTRAINT batch_items_announced_when_ended;
ALTER TABLE batch_items ADD CONSTRAINT batch_items_announced_when_ended CHECK (
    announced_at IS NULL OR status IN ('done', 'failed', 'cancelled')
);

-- Images cancelled before this migration: their batch's counts said so; no event is owed.
UPDATE batch_items SET announced_at = COALESCE(finished_at, now())
WHERE status = 'cancelled' AND announced_at IS NULL;

DROP INDEX batch_items_unannounced;
CREATE INDEX batch_items_unannounced ON batch_items (batch_id)
    WHERE announced_at IS NULL AND status IN ('done', 'failed', 'cancelled');
