"""What an installed package promises beyond its code: one version everywhere, the typing marker, and
``python -m midlevel_fast`` as the command."""
from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
import typing
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

import pytest

import midlevel_fast
from midlevel_fast.cli import main

CHANGELOG = Path(__file__).resolve().parents[1] / "CHANGELOG.md"


def test_one_version_in_the_metadata_the_command_and_the_changelog(capsys):
    # The metadata is read from __version__ at install time: a differing one means a stale install or a second
    # version written somewhere (pyproject.toml must say dynamic).
    assert version("midlevel_fast") == midlevel_fast.__version__
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"midlevel-fast {midlevel_fast.__version__}"
    newest = re.search(r"^(\d+\.\d+(?:\.\d+)?) ", CHANGELOG.read_text(encoding="utf-8"), re.MULTILINE)
    assert newest, "CHANGELOG.md names no version"
    major_minor = ".".join(midlevel_fast.__version__.split(".")[:2])
    assert newest.group(1) in (major_minor, midlevel_fast.__version__), (
        f"CHANGELOG.md's newest entry is {newest.group(1)}, the package is {midlevel_fast.__version__}")


def test_the_package_says_it_is_typed():
    assert files("midlevel_fast").joinpath("py.typed").is_file()


def test_python_m_runs_the_command():
    done = subprocess.run([sys.executable, "-m", "midlevel_fast", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"midlevel-fast {midlevel_fast.__version__}"
    bad = subprocess.run([sys.executable, "-m", "midlevel_fast", "score", "--no-such-option"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr


def _package_classes(hint: object) -> set[type]:
    """The package's classes named anywhere in a type hint (``list[Detection]``, ``X | None``, ...)."""
    if isinstance(hint, type):
        return {hint} if hint.__module__.startswith("midlevel_fast") else set()
    return set().union(*(_package_classes(a) for a in typing.get_args(hint)))


def test_every_type_the_public_api_returns_is_exported():
    # What a public function returns, and the fields of what it returns, recursively: a user must be able to
    # name each of them (isinstance, annotations) from the top-level package.
    seen: set[type] = set()
    todo = [getattr(midlevel_fast, name) for name in midlevel_fast.__all__]
    while todo:
        obj = todo.pop()
        if inspect.isfunction(obj):
            hints = [typing.get_type_hints(obj).get("return")]
        elif dataclasses.is_dataclass(obj):
            hints = list(typing.get_type_hints(obj).values())
        else:
            continue
        for cls in set().union(*(_package_classes(h) for h in hints)) - seen:
            seen.add(cls)
            todo.append(cls)
    missing = sorted(c.__name__ for c in seen if getattr(midlevel_fast, c.__name__, None) is not c)
    assert not missing, f"returned by the public API but not exported from midlevel_fast: {missing}"
