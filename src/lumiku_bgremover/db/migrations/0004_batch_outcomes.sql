-- 0004_batch_outcomes: a batch can end `partial` (some images done, some failed or
-- cancelled), images whose source was missing or too large when the request was checked
-- fail at intake without being charged (`failed_at_intake`: the batch is priced on the
-- others), and `completion_announced_at` records that `batch.completed` was published after
-- the row became final (an outbox mark: a crash between the two re-publishes on recovery).

ALTER TABLE batches DROP CONSTRAINT batches_status_check;
ALTER TABLE batches DROP CONSTRAINT batches_completed_when_final;
ALTER TABLE batches
    ADD CONSTRAINT batches_status_check CHECK (
        status IN ('accepted', 'processing', 'finalizing', 'completed', 'partial', 'cancelled',
                   'failed')
    ),
    ADD CONSTRAINT batches_completed_when_final CHECK (
        completed_at IS NULL OR status IN ('completed', 'partial', 'cancelled', 'failed')
    ),
    ADD COLUMN failed_at_intake integer NOT NULL DEFAULT 0 CHECK (failed_at_intake >= 0),
    ADD COLUMN completion_announced_at timestamptz,
    ADD CONSTRAINT batches_intake_failures_within_failed CHECK (failed_at_intake <= failed),
    ADD CONSTRAINT batches_announced_when_final CHECK (
        completion_announced_at IS NULL OR completed_at IS NOT NULL
    );
