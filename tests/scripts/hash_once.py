"""One process of the hash-once test: wait for GO_FILE, hash PATH through the shared cache, print the result.

Usage: ``python hash_once.py PATH READY_FILE GO_FILE``; prints ``{"sha256": ..., "computed": ...}``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from vggtctl.services.hashing import hash_file

path, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ready.write_text("ready")
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.001)
result = hash_file(path)
print(json.dumps({"sha256": result.sha256, "computed": result.computed}))
