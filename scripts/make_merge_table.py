#!/usr/bin/env python3
"""Build `pyworker/data/gpt2-merges.bin` from `pyworker/data/vocab.bpe`.

    python scripts/make_merge_table.py            # write it
    python scripts/make_merge_table.py --check    # exit 1 if the shipped file differs

The table is what `pyworker.bpe` needs to count GPT-2 tokens, and nothing
else: symbol ids of our own (byte b is id b, merge number r makes id 256 + r),
each merge as the pair code `(left << 17) | right`, sorted, followed by the
merge numbers in the same order. 500 KB on disk and in memory, loaded in a
millisecond, where `tokenizers` keeps the vocabulary and merges in 12 MB.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyworker.bpe import MERGE_TABLE, build_merge_table  # noqa: E402

VOCAB = ROOT / "pyworker" / "data" / "vocab.bpe"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing it")
    args = parser.parse_args()
    table = build_merge_table(VOCAB.read_text(encoding="utf-8"))
    if args.check:
        same = MERGE_TABLE.exists() and MERGE_TABLE.read_bytes() == table
        print(f"{MERGE_TABLE.name}: {'up to date' if same else 'differs from vocab.bpe: run without --check'}")
        return 0 if same else 1
    MERGE_TABLE.write_bytes(table)
    print(f"wrote {MERGE_TABLE} ({len(table)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
