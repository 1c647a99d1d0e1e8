from pathlib import Path

import pytest

from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.engine_settings import ModelSource
from lumiku_bgremover.settings import (
    DEFAULT_ROUTES,
    ProviderModel,
    Resilience,
    Route,
    Settings,
    SettingsError,
)

S3 = {"S3_ENDPOINT": "minio:9000", "S3_ACCESS_KEY": "ak", "S3_SECRET_KEY": "sk"}


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings.nats.servers == ("nats://127.0.0.1:4222",)
    assert settings.database is None
    assert settings.storage.s3 is None
    assert str(settings.timezone) == "Asia/Jakarta"
    assert settings.engines.routes == DEFAULT_ROUTES
    assert settings.limits.max_images == 500
    assert settings.limits.max_image_bytes == 10 * 1024 * 1024
    assert settings.admin_subjects_enabled is False


def test_full_environment() -> None:
    env = {
        **S3,
        "NATS_URL": "nats://a:4222, tls://b:4222",
        "NATS_USER": "svc",
        "NATS_PASSWORD": "pw",
        "NATS_SUBJECT_PREFIX": "staging.",
        "DATABASE_URL": "postgresql://u@db/lumiku",
        "S3_SECURE": "false",
        "S3_ALLOWED_BUCKETS": "avatars, poses",
        "TIER_ROUTING": "basic=local:isnet-medium,industry=fake:mask",
        "BUSINESS_TIMEZONE": "UTC",
        "WORK_PARTITIONS": "16",
        "ADMIN_SUBJECTS_ENABLED": "yes",
    }
    settings = Settings.from_env(env)
    assert settings.nats.servers == ("nats://a:4222", "tls://b:4222")
    assert settings.nats.subject_prefix == "staging."
    assert settings.require_database().url == "postgresql://u@db/lumiku"
    s3 = settings.storage.s3
    assert s3 is not None
    assert (s3.endpoint, s3.secure, s3.allowed_buckets) == (
        "minio:9000",
        False,
        ("avatars", "poses"),
    )
    assert settings.engines.routes[Tier.BASIC] == Route(engine="local", model="isnet-medium")
    assert settings.engines.routes[Tier.INDUSTRY] == Route(engine="fake", model="mask")
    assert settings.engines.routes[Tier.STANDARD] == DEFAULT_ROUTES[Tier.STANDARD]
    assert settings.limits.work_partitions == 16
    assert settings.admin_subjects_enabled is True


def test_scheme_in_s3_endpoint_sets_secure() -> None:
    s3 = Settings.from_env({**S3, "S3_ENDPOINT": "https://s3.example.test"}).storage.s3
    assert s3 is not None
    assert (s3.endpoint, s3.secure) == ("s3.example.test", True)


def test_secrets_stay_out_of_repr() -> None:
    env = {**S3, "NATS_USER": "u", "NATS_PASSWORD": "hunter2", "HF_TOKEN": "hf_secret"}
    text = repr(Settings.from_env(env))
    assert "hunter2" not in text
    assert "hf_secret" not in text
    assert "'sk'" not in text


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"NATS_URL": "http://x:4222"}, "NATS_URL"),
        ({"NATS_USER": "only-user"}, "NATS_PASSWORD"),
        ({"NATS_SUBJECT_PREFIX": "no-dot"}, "NATS_SUBJECT_PREFIX"),
        ({"NATS_STREAM_PREFIX": "a.b"}, "NATS_STREAM_PREFIX"),
        ({"NATS_CREDS": "/nonexistent/user.creds"}, "NATS_CREDS"),
        ({"NATS_USER": "u", "NATS_PASSWORD": "p", "NATS_TOKEN": "t"}, "NATS_TOKEN"),
        ({"NATS_TLS_KEY": "/etc/hostname"}, "NATS_TLS_KEY"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        (
            {
                "DATABASE_POOL_MIN": "5",
                "DATABASE_POOL_MAX": "2",
                "DATABASE_URL": "postgresql://x/y",
            },
            "DATABASE_POOL_MIN",
        ),
        ({"S3_ENDPOINT": "minio:9000", "S3_ACCESS_KEY": "a"}, "S3_SECRET_KEY"),
        ({**S3, "S3_BUCKET": "Bad_Bucket"}, "S3_BUCKET"),
        ({**S3, "S3_ENDPOINT": "ftp://x"}, "S3_ENDPOINT"),
        ({**S3, "S3_SECURE": "maybe"}, "S3_SECURE"),
        ({"STORAGE_BACKEND": "floppy"}, "STORAGE_BACKEND"),
        ({"STORAGE_BACKEND": "local"}, "LOCAL_STORAGE_DIR"),
        ({"TIER_ROUTING": "gold=local:x"}, "TIER_ROUTING"),
        ({"TIER_ROUTING": "basic=torch:x"}, "TIER_ROUTING"),
        ({"TIER_ROUTING": "basic=local"}, "TIER_ROUTING"),
        ({"BUSINESS_TIMEZONE": "Mars/Olympus"}, "BUSINESS_TIMEZONE"),
        ({"MAX_IMAGES_PER_BATCH": "501"}, "MAX_IMAGES_PER_BATCH"),
        ({"WORK_PARTITIONS": "eight"}, "WORK_PARTITIONS"),
        ({"ENGINE_TIMEOUT_S": "0"}, "ENGINE_TIMEOUT_S"),
        ({"HF_ENDPOINT": "not a url"}, "HF_ENDPOINT"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
    ],
)
def test_bad_settings_name_their_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}: ")


def test_require_database_names_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^DATABASE_URL: is required"):
        Settings.from_env({}).require_database()


def test_creds_file_must_exist(tmp_path: Path) -> None:
    creds = tmp_path / "svc.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    assert Settings.from_env({"NATS_CREDS": str(creds)}).nats.creds_file == creds


def test_one_nats_login_at_a_time(tmp_path: Path) -> None:
    creds = tmp_path / "svc.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    env = {"NATS_CREDS": str(creds), "NATS_USER": "u", "NATS_PASSWORD": "p"}
    with pytest.raises(
        SettingsError, match=r"^NATS_USER: use one NATS login, not NATS_CREDS and NATS_USER$"
    ):
        Settings.from_env(env)


# --- engines: hosted providers, fallbacks, resilience ------------------------------------


def test_engine_defaults() -> None:
    engines = Settings.from_env({}).engines
    assert engines.hf_router == "https://router.huggingface.co"
    assert engines.hf_providers["briaai/RMBG-2.0"] == ProviderModel(
        "fal-ai", "fal-ai/bria/background/remove"
    )
    assert engines.fallbacks == {}
    assert engines.keyless == "local"
    assert engines.keyless_model == "isnet-medium"
    assert engines.resilience == Resilience()
    assert (engines.timeout_for("segmind"), engines.has_key("huggingface")) == (60.0, False)
    assert engines.has_key("local")


@pytest.mark.parametrize(
    ("env", "attribute", "expected"),
    [
        ({"TIER_FALLBACK": "standard=local:isnet-medium"}, "fallbacks",
         {Tier.STANDARD: Route(engine="local", model="isnet-medium")}),
        ({"HF_PROVIDER_MODELS": "a/b=replicate:owner/model"}, "hf_providers",
         {"briaai/RMBG-2.0": ProviderModel("fal-ai", "fal-ai/bria/background/remove"),
          "a/b": ProviderModel("replicate", "owner/model")}),
        ({"SEGMIND_MODELS": "birefnet-general=birefnet, birefnet-portrait=bg-removal-v2"},
         "segmind_models", {"birefnet-general": "birefnet", "birefnet-portrait": "bg-removal-v2"}),
        ({"ENGINE_TIMEOUTS": "segmind=90, huggingface=20"}, "timeouts",
         {"segmind": 90.0, "huggingface": 20.0}),
        ({"HOSTED_WITHOUT_KEY": "error"}, "keyless", "error"),
        ({"LOCAL_ENGINE_PROVIDERS": "CUDAExecutionProvider,CPUExecutionProvider"},
         "local_providers", ("CUDAExecutionProvider", "CPUExecutionProvider")),
        ({"HF_ROUTER_URL": "http://127.0.0.1:9/"}, "hf_router", "http://127.0.0.1:9"),
        ({"ENGINE_ATTEMPTS": "1", "ENGINE_BREAKER_COOLDOWN_S": "2.5"}, "resilience",
         Resilience(attempts=1, breaker_cooldown_s=2.5)),
        ({}, "segmind_image_transport", "base64"),
        ({"SEGMIND_IMAGE_TRANSPORT": "url"}, "segmind_image_transport", "url"),
        ({"SEGMIND_IMAGE_TRANSPORT": "Base64"}, "segmind_image_transport", "base64"),
        ({}, "model_sources", {}),
        ({"MODEL_SOURCES": f"u2net=https://h.example/u2net.onnx#{'AB' * 32}"}, "model_sources",
         {"u2net": ModelSource("https://h.example/u2net.onnx", "ab" * 32)}),
        ({"MODEL_SOURCES": "rmbg-1.4=https://h.example/r.onnx, birefnet=http://10.0.0.5/b.onnx"},
         "model_sources", {"rmbg-1.4": ModelSource("https://h.example/r.onnx"),
                           "birefnet": ModelSource("http://10.0.0.5/b.onnx")}),
        ({}, "model_trust_unpinned", False),
        ({"MODEL_TRUST_UNPINNED": "yes"}, "model_trust_unpinned", True),
        ({}, "model_download_max_bytes", 2 << 30),
        ({"MODEL_DOWNLOAD_MAX_MB": "300"}, "model_download_max_bytes", 300 << 20),
    ],
)  # fmt: skip
def test_engine_settings_table(env: dict[str, str], attribute: str, expected: object) -> None:
    assert getattr(Settings.from_env(env).engines, attribute) == expected


def test_per_engine_timeout_overrides_the_default() -> None:
    engines = Settings.from_env({"ENGINE_TIMEOUT_S": "45", "ENGINE_TIMEOUTS": "segmind=90"}).engines
    assert (engines.timeout_for("segmind"), engines.timeout_for("huggingface")) == (90.0, 45.0)


def test_keys_are_seen() -> None:
    engines = Settings.from_env({"HF_TOKEN": "hf_x", "SEGMIND_API_KEY": "SG_y"}).engines
    assert engines.has_key("huggingface")
    assert engines.has_key("segmind")
    assert "SG_y" not in repr(engines)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TIER_FALLBACK": "gold=local:x"}, "TIER_FALLBACK"),
        ({"TIER_FALLBACK": "basic=torch:x"}, "TIER_FALLBACK"),
        ({"HF_PROVIDER_MODELS": "a/b=fal-ai"}, "HF_PROVIDER_MODELS"),
        ({"HF_PROVIDER_MODELS": "just-a-name"}, "HF_PROVIDER_MODELS"),
        ({"SEGMIND_MODELS": "=x"}, "SEGMIND_MODELS"),
        ({"ENGINE_TIMEOUTS": "segmind=0"}, "ENGINE_TIMEOUTS"),
        ({"ENGINE_TIMEOUTS": "segmind=soon"}, "ENGINE_TIMEOUTS"),
        ({"ENGINE_TIMEOUTS": "torch=5"}, "ENGINE_TIMEOUTS"),
        ({"ENGINE_ATTEMPTS": "0"}, "ENGINE_ATTEMPTS"),
        ({"ENGINE_BACKOFF_BASE_S": "5", "ENGINE_BACKOFF_CAP_S": "1"}, "ENGINE_BACKOFF_CAP_S"),
        ({"ENGINE_BREAKER_FAILURES": "0"}, "ENGINE_BREAKER_FAILURES"),
        ({"HOSTED_WITHOUT_KEY": "maybe"}, "HOSTED_WITHOUT_KEY"),
        ({"SEGMIND_IMAGE_TRANSPORT": "presigned"}, "SEGMIND_IMAGE_TRANSPORT"),
        (
            {
                "SEGMIND_IMAGE_TRANSPORT": "url",
                "STORAGE_BACKEND": "local",
                "LOCAL_STORAGE_DIR": "/tmp",
            },
            "SEGMIND_IMAGE_TRANSPORT",
        ),
        ({"HF_ROUTER_URL": "ftp://x"}, "HF_ROUTER_URL"),
        ({"MODEL_SOURCES": "u2net"}, "MODEL_SOURCES"),
        ({"MODEL_SOURCES": "u2net=ftp://h.example/u.onnx"}, "MODEL_SOURCES"),
        ({"MODEL_SOURCES": "u2net=https:///u.onnx"}, "MODEL_SOURCES"),
        ({"MODEL_SOURCES": "u2net=https://h.example/u.onnx#abc"}, "MODEL_SOURCES"),
        ({"MODEL_SOURCES": f"u2net=https://h.example/u.onnx#{'g' * 64}"}, "MODEL_SOURCES"),
        ({"MODEL_TRUST_UNPINNED": "perhaps"}, "MODEL_TRUST_UNPINNED"),
        ({"MODEL_DOWNLOAD_MAX_MB": "0"}, "MODEL_DOWNLOAD_MAX_MB"),
    ],
)
def test_bad_engine_settings_name_their_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert info.value.variable == variable


# --- integrations: stream binding and the notifier's SMTP ------------------------------------


def test_integrations_default_to_every_app_on_our_stream_never_provisioned() -> None:
    settings = Settings.from_env({})
    assert settings.integrations.provision_stream is False
    bindings = {b.app.value: (b.subject, b.stream, b.durable)
                for b in settings.integrations.bindings("BGREMOVE")}  # fmt: skip
    assert bindings == {
        "avatar-creator": (
            "avatar.project.completed", "BGREMOVE_INTEGRATIONS",
            "BGREMOVE_INTEGRATIONS_AVATAR_CREATOR"),
        "pose-generator": (
            "pose.generated", "BGREMOVE_INTEGRATIONS", "BGREMOVE_INTEGRATIONS_POSE_GENERATOR"),
        "upscaler": (
            "upscaler.completed", "BGREMOVE_INTEGRATIONS", "BGREMOVE_INTEGRATIONS_UPSCALER"),
    }  # fmt: skip
    assert settings.notifier.smtp is None


@pytest.mark.parametrize(
    ("env", "apps", "streams", "durables", "provision"),
    [
        ({"INTEGRATION_APPS": "none"}, [], {}, {}, False),
        (
            {"INTEGRATION_APPS": "pose-generator, upscaler"},
            ["pose-generator", "upscaler"],
            {},
            {},
            False,
        ),
        (
            {
                "AVATAR_CREATOR_STREAM": "AVATAR_EVENTS",
                "AVATAR_CREATOR_DURABLE": "bg-avatar",
                "INTEGRATIONS_PROVISION_STREAM": "true",
            },
            ["avatar-creator", "pose-generator", "upscaler"],
            {"avatar-creator": "AVATAR_EVENTS"},
            {"avatar-creator": "bg-avatar"},
            True,
        ),
    ],
)
def test_integration_bindings_from_the_environment(
    env: dict[str, str], apps: list[str], streams: dict[str, str], durables: dict[str, str],
    provision: bool,
) -> None:  # fmt: skip
    found = Settings.from_env(env).integrations
    assert sorted(app.value for app in found.apps) == apps
    assert {app.value: name for app, name in found.streams.items()} == streams
    assert {app.value: name for app, name in found.durables.items()} == durables
    assert found.provision_stream is provision


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"INTEGRATION_APPS": "avatar-creator,chat"}, "INTEGRATION_APPS"),
        ({"POSE_GENERATOR_STREAM": "has space"}, "POSE_GENERATOR_STREAM"),
        ({"INTEGRATIONS_PROVISION_STREAM": "maybe"}, "INTEGRATIONS_PROVISION_STREAM"),
        ({"SMTP_HOST": "mail", "SMTP_USER": "u"}, "SMTP_PASSWORD"),
        ({"SMTP_HOST": "mail", "SMTP_PORT": "0"}, "SMTP_PORT"),
        ({"NOTIFY_RETRY_S": "60", "NOTIFY_RETRY_MAX_S": "10"}, "NOTIFY_RETRY_MAX_S"),
    ],
)
def test_bad_integration_settings_name_their_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


def test_smtp_from_the_environment() -> None:
    env = {"SMTP_HOST": "smtp.example.com", "SMTP_USER": "u", "SMTP_PASSWORD": "hunter2",
           "SMTP_FROM": "Lumiku <hi@example.com>", "NOTIFY_RETRY_S": "5"}  # fmt: skip
    notifier = Settings.from_env(env).notifier
    assert notifier.smtp is not None
    assert (notifier.smtp.port, notifier.smtp.starttls, notifier.smtp.sender) == (
        587, True, "Lumiku <hi@example.com>")  # fmt: skip
    assert "hunter2" not in repr(notifier.smtp)
    assert (notifier.retry_delay_s, notifier.retry_max_s) == (5.0, 900.0)
