-- 0006_integrations: integration settings per user AND app (the 0001 table held one row per
-- user with a flag per app and no per-app tier or output), and the completion e-mails a
-- request asked for, recorded so that each batch is e-mailed exactly once.

CREATE TABLE integration_settings (
    user_id             text NOT NULL CHECK (user_id <> ''),
    app                 text NOT NULL
                        CHECK (app IN ('avatar-creator', 'pose-generator', 'upscaler')),
    enabled             boolean NOT NULL DEFAULT false,
    tier                text NOT NULL DEFAULT 'standard'
                        CHECK (tier IN ('basic', 'standard', 'professional', 'industry')),
    output_options      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(output_options) = 'object'),
    then_upscale_scale  smallint CHECK (then_upscale_scale IN (2, 4)),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, app)
);

CREATE TRIGGER integration_settings_touch BEFORE UPDATE ON integration_settings
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- What the old table said, per app (it was never written by the service; kept for safety).
INSERT INTO integration_settings (user_id, app, enabled, tier, output_options, then_upscale_scale)
SELECT user_id, 'avatar-creator', avatar_auto_remove, default_tier, output_options,
       CASE WHEN upscaler_pipeline = 'remove_then_upscale' THEN 2 END
FROM user_integration_settings
UNION ALL
SELECT user_id, 'pose-generator', pose_auto_remove, default_tier, output_options,
       CASE WHEN upscaler_pipeline = 'remove_then_upscale' THEN 2 END
FROM user_integration_settings
UNION ALL
SELECT user_id, 'upscaler', upscaler_pipeline = 'upscale_then_remove', default_tier,
       output_options, NULL
FROM user_integration_settings;

DROP TABLE user_integration_settings;

CREATE TABLE batch_notifications (
    batch_id     text PRIMARY KEY REFERENCES batches (id) ON DELETE CASCADE,
    user_id      text NOT NULL CHECK (user_id <> ''),
    email        text NOT NULL CHECK (email <> ''),
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error   text,
    sent_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
