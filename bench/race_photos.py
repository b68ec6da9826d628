"""24 MP race-like test photos built from ../shared/faces/groups, for the benchmarks (never committed).

Each photo is 6000x4000: three of the shared group and race photos side by side, upscaled to fill
a 2000x4000 column each, with mild sensor-like noise so the JPEG is as costly to decode as a camera
file (about 4.7 MB at quality 90). Twelve photos hold about 18 faces each on average.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (6000, 4000)
COLUMNS = 3


def build_race_photos(groups: Path, out: Path, count: int) -> list[Path]:
    sources = sorted(p for p in groups.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    column_w = SIZE[0] // COLUMNS
    for i in range(count):
        path = out / f"race24_{i:02d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        canvas = Image.new("RGB", SIZE, (90, 100, 95))
        for c in range(COLUMNS):
            img = Image.open(sources[(i * COLUMNS + c) % len(sources)]).convert("RGB")
            f = min(column_w / img.width, SIZE[1] / img.height)
            img = img.resize((int(img.width * f), int(img.height * f)), Image.Resampling.BICUBIC)
            canvas.paste(img, (c * column_w + (column_w - img.width) // 2, (SIZE[1] - img.height) // 2))
        noise = np.random.default_rng(i).normal(0, 4, (SIZE[1], SIZE[0], 1)).astype(np.int16)
        pixels = np.clip(np.asarray(canvas, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=90)
    return paths
