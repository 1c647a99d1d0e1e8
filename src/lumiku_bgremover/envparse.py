"""Reading typed values out of an environment mapping; every error names its variable."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class SettingsError(ValueError):
    """A setting is missing or malformed; the message starts with the variable's name."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class Env:
    """A read-only view over environment variables with typed getters."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def text(self, name: str, default: str | None = None) -> str | None:
        """The stripped value, or `default` when unset or blank."""
        raw = self._values.get(name, "").strip()
        return raw or default

    def required(self, name: str) -> str:
        """The value; a `SettingsError` when unset or blank."""
        value = self.text(name)
        if value is None:
            raise SettingsError(name, "is required but not set")
        return value

    def integer(self, name: str, default: int, *, lo: int, hi: int) -> int:
        """An integer within [lo, hi]."""
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise SettingsError(name, f"expected an integer, got {raw!r}") from None
        if not lo <= value <= hi:
            raise SettingsError(name, f"must be between {lo} and {hi}, got {value}")
        return value

    def number(self, name: str, default: float, *, lo: float, hi: float) -> float:
        """A number within [lo, hi]."""
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(name, f"expected a number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise SettingsError(name, f"must be between {lo} and {hi}, got {value}")
        return value

    def flag(self, name: str, *, default: bool) -> bool:
        """true/false, 1/0, yes/no, on/off."""
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise SettingsError(name, f"expected true or false, got {raw!r}")

    def items(self, name: str) -> tuple[str, ...]:
        """A comma-separated list, blanks dropped."""
        raw = self.text(name) or ""
        return tuple(part.strip() for part in raw.split(",") if part.strip())

    def file(self, name: str) -> Path | None:
        """A path that must name an existing file."""
        raw = self.text(name)
        if raw is None:
            return None
        path = Path(raw).expanduser()
        if not path.is_file():
            raise SettingsError(name, f"file not found: {path}")
        return path

    def dir(self, name: str, default: Path | None = None) -> Path | None:
        """A directory path (created later by whoever writes there)."""
        raw = self.text(name)
        return Path(raw).expanduser() if raw is not None else default
