"""docs/deploy.md and its files stay true to the code: every command line they show uses options
the CLI has, every setting they name exists, and each role's config.toml loads and plans."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from sorakit.cli.main import _BY_NAME, load_command
from sorakit.config import Settings, load_settings
from sorakit.engines import build_engines

DEPLOY = Path(__file__).resolve().parents[1] / "docs" / "deploy"
SETTINGS = {f for f in Settings.__dataclass_fields__}


def _check_command(argv: list[str]) -> None:
    """``argv`` (after ``sorakit``) names a command and only options that command has."""
    command = load_command(_BY_NAME[argv[0]])
    known = {opt for param in command.params for opt in getattr(param, "opts", [])}
    used = [a.split("=")[0] for a in argv[1:] if a.startswith("--")]
    unknown = [u for u in used if u not in known]
    assert not unknown, f"`sorakit {' '.join(argv)}`: {unknown} not options of `sorakit {argv[0]}`"


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_commands_use_real_options():
    services = _compose()["services"]
    roles = {name: s["command"] for name, s in services.items() if s.get("image") == "sorakit:latest"}
    assert sorted(roles) == ["api-a", "api-b", "gpu-1", "gpu-2", "gpu-3"]
    for argv in roles.values():
        _check_command(argv)
    assert all("--workers" in roles[n] and roles[n][roles[n].index("--workers") + 1] == "0" for n in ("api-a", "api-b"))


def test_compose_and_env_file_name_real_settings():
    env = dict(_compose()["x-fleet-env"])
    env.update(_compose()["x-api"]["environment"])
    for line in (DEPLOY / "fleet.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    for key in env:
        if key.startswith("SORAKIT_"):
            assert key[len("SORAKIT_"):].lower() in SETTINGS, key
    fleet = {k: v for k, v in env.items() if k.startswith("SORAKIT_")}
    settings = load_settings({"data_dir": "/nonexistent-sorakit-docs"}, env=fleet)
    assert settings.database_url.startswith("postgresql://") and settings.media.startswith("s3://")
    assert settings.metrics_allow[-1] in ("172.16.0.0/12", "10.0.0.0/8")


def test_systemd_units_and_the_guide_use_real_options():
    lines = []
    for unit in DEPLOY.glob("*.service"):
        lines += [line.split("=", 1)[1] for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    guide = (DEPLOY.parent / "deploy.md").read_text()
    lines += re.findall(r"^(?:\$ )?(sorakit [^\n#]+)", guide, flags=re.M)
    checked = 0
    for line in lines:
        argv = shlex.split(line)
        argv = argv[argv.index(next(a for a in argv if a.endswith("sorakit"))) + 1:]
        _check_command(argv)
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("role", ["api", "worker"])
def test_each_roles_config_loads_and_plans(role, tmp_path):
    shutil.copy(DEPLOY / "config" / f"{role}.toml", tmp_path / "config.toml")
    settings = load_settings({"data_dir": tmp_path}, env={})
    engines = build_engines(settings)
    assert {"wan", "ltx"} <= set(engines) and settings.default_engine == "wan"
    plan = engines["wan"].plan("landscape", "small", 150, image=False)  # 5 s asked at 30 fps
    assert (plan.width, plan.height, plan.fps) == (832, 480, 16) and plan.n_frames % 4 == 1
