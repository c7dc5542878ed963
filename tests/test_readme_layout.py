"""The README's Layout names every module, so a new module cannot land without a word on its job."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("simulator", "attacks", "baselines")


def _layout_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1]


def test_the_layout_names_every_module():
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", _layout_block()))
    missing = sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                     if p.stem != "__init__" and p.stem not in words)
    assert not missing, f"README.md's Layout does not name: {', '.join(missing)}"
