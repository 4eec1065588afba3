"""What bounding a request costs: json.loads alone vs parse + bounds walk + validation.

    .venv/bin/python benchmarks/input_bounds.py

Prints per-body times and the ratio to json.loads measured in the same run, for the web page's
typical create body and for the largest body the server accepts (256 KB, many small values).
"""

from __future__ import annotations

import json
import time

from sorakit.protocol.models import CreateRequest
from sorakit.server.bodies import parse_json, validate

TYPICAL = {"kind": "video", "prompt": "Cyberpunk city rain, neon reflections " * 5, "title": None,
           "orientation": "landscape", "size": "small", "n_frames": 300, "model": "sy_8",
           "inpaint_items": [], "remix_target_id": None, "style_id": None, "cameo_ids": None,
           "cameo_replacements": None, "storyboard_id": None, "metadata": None,
           "use_image_as_first_frame": False}
# The worst a client can send inside the limits: the 16 KB of unknown keys and nested metadata.
WORST = {**TYPICAL, "prompt": "p" * 9_000, "title": "t" * 1_000,
         "metadata": {f"k{i}": [{"a": [1, 2, {"b": "x" * 20}]} for _ in range(20)] for i in range(60)},
         **{f"extra{i}": "e" * 150 for i in range(80)}}


def timed(fn, data: bytes, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn(data)
    return (time.perf_counter() - start) / repeat


def main() -> None:
    for name, body in (("typical", TYPICAL), ("largest", WORST)):
        data = json.dumps(body).encode()
        repeat = 2000 if name == "typical" else 50
        base = timed(json.loads, data, repeat)
        full = timed(lambda d: validate(CreateRequest, parse_json(d)), data, repeat)
        print(f"{name:8s} {len(data) / 1024:7.1f} KB  json.loads {base * 1e6:8.1f} us  "
              f"bounded {full * 1e6:8.1f} us  ratio {full / base:5.1f}x")


if __name__ == "__main__":
    main()
