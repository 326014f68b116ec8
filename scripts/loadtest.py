#!/usr/bin/env python3
"""Load-test an endpoint group: see `python scripts/loadtest.py --help`.

python scripts/loadtest.py -n 1000 -rps 0.5 -k "$API_KEY" -e "$ENDPOINT_GROUP_NAME"
python scripts/loadtest.py -n 1000 -rps 20 -l      # the local stack of python -m pyworker.dev
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyworker.loadtest import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
