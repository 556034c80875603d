"""Settings from an INI file, overridden by environment variables.

Lookup order (later wins): built-in defaults, ``$XDG_CONFIG_HOME/tasklet/config.ini`` (or the file named by
``TASKLET_CONFIG``), then ``TASKLET_*`` variables. Keeping the environment last lets a test or a one-off
command point at another database without editing any file.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from tasklet.errors import TaskletError
from tasklet.models import Priority

_SECTION = "tasklet"


@dataclass(frozen=True)
class Config:
    db_path: Path
    default_priority: Priority = Priority.NORMAL
    minutes_per_day: int = 240
    language: str = "en"
    color: bool = True
    week_starts_monday: bool = True


def default_paths(env: Mapping[str, str]) -> tuple[Path, Path]:
    """Where the config file and the database live when nothing says otherwise."""
    home = Path(env.get("HOME", "~")).expanduser()
    config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    data_home = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    return config_home / "tasklet" / "config.ini", data_home / "tasklet" / "tasks.db"


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """The effective configuration for this process."""
    env = os.environ if env is None else env
    config_file, db_path = default_paths(env)
    config = Config(db_path=db_path)
    path = Path(env.get("TASKLET_CONFIG") or config_file)
    if path.is_file():
        config = _apply(config, _read_ini(path), str(path))
    overrides = {
        field.name: env[f"TASKLET_{field.name.upper()}"]
        for field in fields(Config)
        if f"TASKLET_{field.name.upper()}" in env
    }
    return _apply(config, overrides, "environment")


def _read_ini(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise TaskletError(f"{path}: {exc}") from None
    return dict(parser[_SECTION]) if parser.has_section(_SECTION) else {}


def _apply(config: Config, values: Mapping[str, str], origin: str) -> Config:
    """Convert string settings to their field types; unknown keys are errors, typos should not pass silently."""
    known = {field.name for field in fields(Config)}
    changes: dict[str, object] = {}
    for key, raw in values.items():
        if key not in known:
            raise TaskletError(f"{origin}: unknown setting {key!r} (known: {', '.join(sorted(known))})")
        try:
            changes[key] = _convert(key, raw)
        except ValueError as exc:
            raise TaskletError(f"{origin}: bad value for {key}: {exc}") from None
    return replace(config, **changes)


def _convert(key: str, raw: str) -> object:
    if key == "db_path":
        return Path(raw).expanduser()
    if key == "default_priority":
        return Priority.parse(raw)
    if key == "minutes_per_day":
        value = int(raw)
        if value <= 0:
            raise ValueError("must be positive")
        return value
    if key in ("color", "week_starts_monday"):
        lowered = raw.strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"expected yes or no, got {raw!r}")
        return lowered in ("1", "true", "yes", "on")
    return raw.strip()
