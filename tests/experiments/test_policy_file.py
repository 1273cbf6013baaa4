"""The policy file that docs/policies.md prints is the one notebook 01 runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_policy_file_is_the_guide_s_code() -> None:
    guide = (ROOT / "docs" / "policies.md").read_text()
    code = re.search(r"```python\n(\"\"\"spare_workers.*?)```", guide, re.S)
    assert code is not None
    assert (ROOT / "notebooks" / "policies" / "spare_workers.py").read_text() == code.group(1)
