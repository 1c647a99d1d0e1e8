"""Settings of the integrations: which apps' events are consumed, from which stream and
durable consumer, whether `provision` may create a stream for them, and the SMTP server
of the completion e-mails. Typed and frozen, read once from the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final

from lumiku_bgremover.contracts import subjects
from lumiku_bgremover.contracts.common import App
from lumiku_bgremover.envparse import Env, SettingsError

__all__ = [
    "APP_SUBJECTS",
    "Binding",
    "IntegrationSettings",
    "NotifierSettings",
    "SmtpSettings",
    "integration_settings_from_env",
    "notifier_settings_from_env",
]

#: The inbound subject (base name) each app publishes.
APP_SUBJECTS: Final[Mapping[App, str]] = MappingProxyType(
    {
        App.AVATAR_CREATOR: subjects.AVATAR_PROJECT_COMPLETED,
        App.POSE_GENERATOR: subjects.POSE_GENERATED,
        App.UPSCALER: subjects.UPSCALER_COMPLETED,
    }
)
#: `From:` of the completion e-mails unless `SMTP_FROM` says otherwise.
DEFAULT_SENDER: Final = "Lumiku <no-reply@lumiku.local>"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


@dataclass(frozen=True, slots=True)
class Binding:
    """Where one app's events are consumed: a stream and a durable consumer on it."""

    app: App
    subject: str
    stream: str
    durable: str


def _env_name(app: App) -> str:
    return app.value.upper().replace("-", "_")


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrationSettings:
    """Which apps' events start removals, and how they are bound."""

    #: Apps whose events are consumed (each needs its stream to exist).
    apps: frozenset[App] = frozenset(App)
    #: `provision` creates our own stream for the apps' subjects (development, demo, tests).
    #: Settings built in code (tests, embedded stacks) have it on; from the environment
    #: `INTEGRATIONS_PROVISION_STREAM` defaults to off, so production never gets it silently.
    provision_stream: bool = True
    #: Stream names by app; unset: our `<STREAM_PREFIX>_INTEGRATIONS`.
    streams: Mapping[App, str] = field(default_factory=dict)
    #: Durable consumer names by app; unset: `<STREAM_PREFIX>_INTEGRATIONS_<APP>`.
    durables: Mapping[App, str] = field(default_factory=dict)

    def binding(self, app: App, stream_prefix: str) -> Binding:
        """The stream and durable consumer of one app's events."""
        stream = self.streams.get(app) or f"{stream_prefix}_INTEGRATIONS"
        durable = self.durables.get(app) or f"{stream_prefix}_INTEGRATIONS_{_env_name(app)}"
        return Binding(app, APP_SUBJECTS[app], stream, durable)

    def bindings(self, stream_prefix: str) -> tuple[Binding, ...]:
        """The bindings of the enabled apps, in `App` order."""
        return tuple(self.binding(app, stream_prefix) for app in App if app in self.apps)


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpSettings:
    """The SMTP server completion e-mails go through (STARTTLS and auth when set)."""

    host: str
    port: int = 587
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True
    sender: str = DEFAULT_SENDER
    #: A CA bundle to trust for STARTTLS besides the system's (a private relay).
    ca_file: Path | None = None
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifierSettings:
    """The `notifier` role: SMTP, and how long it waits before retrying a failed send."""

    smtp: SmtpSettings | None = None
    retry_delay_s: float = 30.0
    retry_max_s: float = 900.0


def _apps(env: Env) -> frozenset[App]:
    named = env.items("INTEGRATION_APPS")
    if not named:
        return frozenset(App)
    if named == ("none",):
        return frozenset()
    known = {app.value: app for app in App}
    unknown = [name for name in named if name not in known]
    if unknown:
        raise SettingsError("INTEGRATION_APPS", f"unknown apps {unknown}; known: {sorted(known)}")
    return frozenset(known[name] for name in named)


def _names(env: Env, suffix: str) -> dict[App, str]:
    found = {}
    for app in App:
        variable = f"{_env_name(app)}_{suffix}"
        value = env.text(variable)
        if value is not None:
            if not _NAME.match(value):
                raise SettingsError(variable, f"letters, digits, _ and - only: {value!r}")
            found[app] = value
    return found


def integration_settings_from_env(env: Env) -> IntegrationSettings:
    """`INTEGRATION_APPS`, `INTEGRATIONS_PROVISION_STREAM`, `<APP>_STREAM`, `<APP>_DURABLE`."""
    return IntegrationSettings(
        apps=_apps(env),
        provision_stream=env.flag("INTEGRATIONS_PROVISION_STREAM", default=False),
        streams=_names(env, "STREAM"),
        durables=_names(env, "DURABLE"),
    )


def _smtp(env: Env) -> SmtpSettings | None:
    host = env.text("SMTP_HOST")
    if host is None:
        return None
    user, password = env.text("SMTP_USER"), env.text("SMTP_PASSWORD")
    if (user is None) != (password is None):
        raise SettingsError(
            "SMTP_PASSWORD" if user else "SMTP_USER", "user and password go together"
        )
    return SmtpSettings(
        host=host,
        port=env.integer("SMTP_PORT", 587, lo=1, hi=65_535),
        user=user,
        password=password,
        starttls=env.flag("SMTP_STARTTLS", default=True),
        sender=env.text("SMTP_FROM", DEFAULT_SENDER) or DEFAULT_SENDER,
        ca_file=env.file("SMTP_CA_FILE"),
        timeout_s=env.number("SMTP_TIMEOUT_S", 30.0, lo=0.1, hi=600.0),
    )


def notifier_settings_from_env(env: Env) -> NotifierSettings:
    """`SMTP_*` and `NOTIFY_RETRY_S` / `NOTIFY_RETRY_MAX_S`."""
    retry = env.number("NOTIFY_RETRY_S", 30.0, lo=0.01, hi=3600.0)
    most = env.number("NOTIFY_RETRY_MAX_S", 900.0, lo=0.01, hi=86_400.0)
    if most < retry:
        raise SettingsError("NOTIFY_RETRY_MAX_S", f"{most} is below NOTIFY_RETRY_S {retry}")
    return NotifierSettings(smtp=_smtp(env), retry_delay_s=retry, retry_max_s=most)
