"""The web app's static files (``static/``), served by ``sorakit.server.routes_web``."""

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
