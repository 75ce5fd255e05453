"""Hostile and broken inputs, in numbers: the fuzz harness of ``tests/test_fuzz_readers.py`` over every reader of
a user's file, with as many seeded mutations per reader as asked, printed as the table in docs/api.md (*Hostile input*).

    python -m experiments.fuzz_readers [--cases 2000] [--seed 26]

Each case ends "correct" (a valid result), "our error" (``ValueError``/``FileNotFoundError`` naming the file) or
"escaped" (anything else: another exception, an invalid result, a hang); the exit status is 1 when any escaped,
and their descriptions are printed.
"""
from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

from tests.test_fuzz_readers import READERS, SEED, run_reader


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2000,
                        help="mutations per reader (the crafted attacks come on top)")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    # Boxes clamped to the image and skipped objects warn by design; the table counts outcomes, not warnings.
    warnings.simplefilter("ignore")
    print("| reader | cases run | correct | our error | escaped |")
    print("|---|---:|---:|---:|---:|")
    escaped_any = []
    for reader in READERS:
        with tempfile.TemporaryDirectory() as folder:
            counts, escaped = run_reader(reader, Path(folder), args.cases, args.seed)
        print(f"| {reader.name} | {sum(counts.values())} | {counts['correct']} | {counts['our error']} | "
              f"{counts['escaped']} |")
        escaped_any += [f"{reader.name}: {e}" for e in escaped]
    for line in escaped_any:
        print(line)
    return 1 if escaped_any else 0


if __name__ == "__main__":
    raise SystemExit(main())
