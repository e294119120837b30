"""The README's settings table is the settings the server accepts: every field of `Settings`
has a row, every row names a field, and each default reads as the code's default. A setting
added, renamed or re-defaulted without the README fails here."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest

from server.settings import DEFAULT_HOSTS, Settings
from tests.conftest import ROOT

# Defaults the table states in words, because the code's default is "decided at start".
IN_WORDS = {
    "SECRET_KEY": "generated",
    "ALLOWED_HOSTS": "`" + ",".join(DEFAULT_HOSTS) + "` and `HOST`",
    "ADMIN_USERS": "empty",
}


def readme_settings(readme: Path) -> dict[str, str]:
    """setting -> its default cell, from the table under `## Settings`."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        found = re.match(r"^\| `([A-Z0-9_]+)` \| (.*?) \| .* \|$", line)
        if found:
            assert found.group(1) not in rows, f"{found.group(1)} has two rows"
            rows[found.group(1)] = found.group(2)
    return rows


def shown(value: Any) -> str:
    """A default as the table writes it: in backticks, numbers without a needless `.0`."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, tuple):
        text = ",".join(value)
    else:
        text = str(value)
    return f"`{text}`"


def code_defaults() -> dict[str, Any]:
    found = {}
    for f in fields(Settings):
        assert f.default is not MISSING, f.name
        found[f.name.upper()] = f.default
    return found


def test_every_setting_has_a_row_and_every_row_a_setting() -> None:
    assert set(readme_settings(ROOT / "README.md")) == set(code_defaults())


@pytest.mark.parametrize("name", sorted(code_defaults()))
def test_each_default_in_the_readme_is_the_codes(name: str) -> None:
    documented = readme_settings(ROOT / "README.md")[name]
    default = code_defaults()[name]
    if name in IN_WORDS:
        assert default in (None, ()), f"{name}: has a default of its own now; write it in the table"
        assert documented == IN_WORDS[name]
    else:
        assert documented == shown(default)


@pytest.mark.parametrize("name", sorted(code_defaults()))
def test_each_documented_setting_is_taken_from_the_environment(name: str) -> None:
    # A value other than the default, given by its documented name, must reach the field.
    default = code_defaults()[name]
    raw, expected = OTHER_VALUES.get(name) or _other(default)
    assert expected != default
    assert getattr(Settings.load([], {name: raw}), name.lower()) == expected


OTHER_VALUES: dict[str, tuple[str, Any]] = {
    "SECRET_KEY": ("k" * 32, "k" * 32),
    "ALLOWED_HOSTS": ("tablecast.test", ("tablecast.test",)),
    "ADMIN_USERS": ("boss", ("boss",)),
    "LOG_LEVEL": ("DEBUG", "DEBUG"),
    "HOST": ("0.0.0.0", "0.0.0.0"),
    "CORS_ORIGINS": ("http://example.test", ("http://example.test",)),
    "DATA_DIR": ("elsewhere", Path("elsewhere")),
}


def _other(default: Any) -> tuple[str, Any]:
    if isinstance(default, bool):
        return ("false" if default else "true"), not default
    if isinstance(default, int | float):
        changed = type(default)(default * 2)
        return str(changed), changed
    raise AssertionError(f"no other value known for a default of {default!r}: add it to OTHER_VALUES")
