"""The README's Redis limiter example runs as printed, against the tests' server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDER = "redis://127.0.0.1:6379/0"


def test_the_redis_limiter_example_runs_and_refuses_the_fourth_request(redis_url: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (example,) = [b for b in blocks if "agentrouter.limits.redis" in b]
    assert PLACEHOLDER in example
    out = subprocess.run(
        [sys.executable, "-c", example.replace(PLACEHOLDER, redis_url)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert [line.split(":")[1].split(",")[0].strip() for line in out] == [
        "allowed",
        "allowed",
        "allowed",
        "refused (rate_limited)",
    ]
    assert "2 left" in out[0] and "0 left" in out[2]
    assert re.search(r"retry in (19|20)\.\ds", out[3])
