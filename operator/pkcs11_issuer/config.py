"""The operator's own configuration file (YAML; the Helm chart renders it).

Only this file decides which PKCS#11 modules may be loaded. Custom resources name tokens and
keys; they never add modules.

    modules:                       # the allowlist: name -> absolute path
      softhsm: /usr/lib/softhsm/libsofthsm2.so
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or wrong; the message says where."""


@dataclass(frozen=True)
class OperatorConfig:
    modules: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> OperatorConfig:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as error:
            raise ConfigError(f"cannot read configuration {path}: {error.strerror}") from error
        except yaml.YAMLError as error:
            raise ConfigError(f"configuration {path} is not valid YAML: {error}") from error
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "configuration") -> OperatorConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: the top level must be a mapping")
        modules = data.get("modules", {})
        if not isinstance(modules, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in modules.items()
        ):
            raise ConfigError(f"{source}: `modules` must map names to absolute paths")
        for name, path in modules.items():
            if not path.startswith("/"):
                raise ConfigError(f"{source}: modules.{name}: {path!r} is not an absolute path")
        return cls(modules=dict(modules))
