"""Write a studio page: `index.html` beside `assets/` (the page's script and style, and its data as a script,
which file:// pages may load where they may not fetch JSON)."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parent
INDEX = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="assets/studio.css">
</head>
<body data-ready="0">
<main id="studio"></main>
<script src="assets/data.js"></script>
<script src="assets/common.js"></script>
<script src="assets/{script}"></script>
</body>
</html>
"""


def write_page(data: dict[str, Any], out_dir: str | Path, script: str = "studio.js") -> Path:
    """index.html and assets/{common.js, script, studio.css, data.js} in `out_dir`; returns index.html's path. `script`:
    studio.js (the player and shard browser) or study.js (the user study)."""
    out = Path(out_dir)
    assets = out / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    for name in ("common.js", script, "studio.css"):
        (assets / name).write_text((ASSETS / name).read_text())
    # "</" is escaped so no caption can close the script early.
    payload = json.dumps(data).replace("</", "<\\/")
    (assets / "data.js").write_text(f"window.STUDIO_DATA = {payload};\n")
    index = out / "index.html"
    index.write_text(INDEX.format(title=html.escape(data["title"]), script=script))
    return index
