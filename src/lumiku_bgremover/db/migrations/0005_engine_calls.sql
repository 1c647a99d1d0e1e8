-- 0005_engine_calls: how each result was made, for margin reports per tier: who ran the
-- model (the engine, or its inference provider), the engine call's latency with retries,
-- the calls made, and whether the tier's fallback route made the matte.

ALTER TABLE batch_items
    ADD COLUMN provider text,
    ADD COLUMN engine_ms integer CHECK (engine_ms >= 0),
    ADD COLUMN engine_attempts integer CHECK (engine_attempts >= 1),
    ADD COLUMN engine_fallback boolean;
