"""The library reports through :mod:`logging`: no ``print`` outside the command line (``cli/``), and
``warnings.warn`` only for API misuse a programmer must see (random weights when ``pretrained=False``), never
for notes about the user's data (those are logged, so ``-q``/``-v`` and the caller's logging config decide)."""
from __future__ import annotations

import ast
from pathlib import Path

import midlevel_fast

PACKAGE = Path(midlevel_fast.__file__).parent
# module (relative to the package) -> why it may call warnings.warn
API_WARNINGS = {
    "backbones/alexnet.py": "pretrained=False: the trunk has random weights",
    "backbones/efficientnet_lite.py": "pretrained=False: the trunk has random weights",
}


def _calls(path: Path) -> list[tuple[str, int]]:
    """``(callee, line)`` of every ``print(...)`` and ``warnings.warn(...)`` call in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id == "print":
            found.append(("print", node.lineno))
        elif (isinstance(f, ast.Attribute) and f.attr == "warn" and isinstance(f.value, ast.Name)
              and f.value.id == "warnings"):
            found.append(("warnings.warn", node.lineno))
    return found


def test_library_code_logs_instead_of_printing_or_warning():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for callee, line in _calls(path):
            if callee == "print" and not rel.startswith("cli/"):
                offenders.append(f"{rel}:{line} print")
            if callee == "warnings.warn" and rel not in API_WARNINGS:
                offenders.append(f"{rel}:{line} warnings.warn")
    assert not offenders, "use logging.getLogger(__name__) instead: " + ", ".join(offenders)


def test_the_allowed_api_warnings_are_still_there():
    # an entry left after its warning moved would silently allow a new one in that module
    for rel in API_WARNINGS:
        assert ("warnings.warn" in {c for c, _ in _calls(PACKAGE / rel)}), rel
