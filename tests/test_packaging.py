"""What an installed package promises beyond its code: one version everywhere, the typing marker, and
``python -m midlevel_fast`` as the command."""
from __future__ import annotations

import re
import subprocess
import sys
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
