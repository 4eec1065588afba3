"""Model configuration and request mapping, without loading any model."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from sorakit.cli.main import app
from sorakit.config import ConfigError, load_settings
from sorakit.engines import build_engines
from sorakit.engines.families import FAMILIES
from sorakit.engines.models import parse_spec


@pytest.mark.parametrize("family,n_frames,expected", [
    ("wan", 150, 81), ("wan", 300, 81), ("wan", 60, 33), ("wan", 1, 5),
    ("ltx", 150, 121), ("ltx", 300, 241), ("ltx", 750, 257),
    ("cogvideox", 150, 41), ("cogvideox", 300, 49),
])
def test_frame_counts_follow_each_family_rule(family, n_frames, expected):
    f = FAMILIES[family]
    got = f.plan("landscape", "small", n_frames).n_frames
    assert got == expected and (got - 1) % f.frame_step == 0 and got <= f.max_frames


@pytest.mark.parametrize("family,orientation,size,expected", [
    ("wan", "landscape", "small", (832, 480)), ("wan", "portrait", "large", (720, 1280)),
    ("wan", "square", "small", (624, 624)), ("ltx", "portrait", "small", (512, 768)),
    ("ltx", "landscape", "large", (1216, 704)), ("cogvideox", "landscape", "small", (720, 480)),
])
def test_sizes_are_native_and_on_the_multiple(family, orientation, size, expected):
    f = FAMILIES[family]
    plan = f.plan(orientation, size, 150)
    assert (plan.width, plan.height) == expected
    assert plan.width % f.multiple == 0 and plan.height % f.multiple == 0 and plan.fps == f.fps


def test_cogvideox_image_to_video_keeps_its_native_landscape_size():
    plan = FAMILIES["cogvideox"].plan("portrait", "small", 150, image=True)
    assert (plan.width, plan.height) == (720, 480)


def test_style_presets_fold_into_the_prompt():
    assert FAMILIES["wan"].prompt_with_style("a fox", "anime").startswith("a fox, anime style")
    assert FAMILIES["wan"].prompt_with_style("a fox", None) == "a fox"
    assert FAMILIES["wan"].prompt_with_style("a fox", "unknown-style") == "a fox"


@pytest.mark.parametrize("table,word", [
    ({"family": "sora", "path": "x"}, "family"), ({"family": "wan"}, "path"),
    ({"family": "wan", "path": "x", "dtype": "int8"}, "dtype"),
    ({"family": "wan", "path": "x", "colour": 1}, "colour"),
    ({"family": "wan", "path": "x", "resolution": {"huge": [1, 2]}}, "huge"),
])
def test_bad_model_tables_name_the_problem(table, word):
    with pytest.raises(ConfigError, match=word):
        parse_spec("m", table)


def test_aliases_and_default_engine_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="nothing"):
        build_engines(load_settings({"data_dir": tmp_path, "models": {"sy_8": "nothing"}}, env={}))
    with pytest.raises(ConfigError, match="default_engine"):
        build_engines(load_settings({"data_dir": tmp_path, "default_engine": "wan"}, env={}))


def test_models_list_shows_presence_and_the_fix(tmp_path):
    (tmp_path / "config.toml").write_text(textwrap.dedent("""
        default_engine = "wan"
        [models.wan]
        family = "wan"
        path = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    """))
    r = CliRunner().invoke(app, ["models", "list", "--data-dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "wan" in r.output and "sorakit models pull wan" in r.output and "sy_8 / sy_ore -> wan" in r.output


def test_without_the_extra_a_diffusers_model_names_it(tmp_path):
    """A server without torch/diffusers still starts; asking for such a model says what to install."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["diffusers"] = None  # as if the extra were not installed
        from fastapi.testclient import TestClient
        from sorakit.config import load_settings
        from sorakit.server import auth
        from sorakit.server.app import create_app
        from sorakit.server.services import build_services
        s = load_settings({{"data_dir": {str(tmp_path)!r}, "workers": 0,
                            "models": {{"wan": {{"family": "wan", "path": {str(tmp_path)!r}}}}}}}, env={{}})
        services = build_services(s)
        user = services.store.create_user("u")
        token, _ = auth.issue(services.store, services.jwt_key, user["id"], 60)
        with TestClient(create_app(s, services=services)) as c:
            h = {{"Authorization": "Bearer " + token}}
            assert c.post("/backend/nf/create", json={{"prompt": "x"}}, headers=h).status_code == 200
            r = c.post("/backend/nf/create", json={{"prompt": "x", "model": "wan"}}, headers=h)
            print(r.status_code, r.json()["error"]["param"], r.json()["error"]["message"])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("400 model") and "sorakit[diffusers]" in out.stdout


def test_zero_guidance_and_empty_negative_prompt_are_choices_not_defaults(tmp_path):
    pytest.importorskip("torch")
    from sorakit.engines import RenderJob
    from sorakit.engines.diffusers_engine import DiffusersEngine

    engine = DiffusersEngine(parse_spec("m", {"family": "wan", "path": "x", "guidance": 7.0}), tmp_path)
    job = RenderJob("t", "p", 64, 32, 9, 16, seed=1, params={"guidance_scale": 0, "negative_prompt": ""})
    args = engine.call_arguments(job)
    assert args["guidance_scale"] == 0.0 and args["negative_prompt"] == ""
    assert engine.call_arguments(RenderJob("t", "p", 64, 32, 9, 16, seed=1))["guidance_scale"] == 7.0


def test_a_model_can_set_its_own_frame_rate(tmp_path):
    from sorakit.engines.diffusers_engine import DiffusersEngine

    engine = DiffusersEngine(parse_spec("wan22", {"family": "wan", "path": "x", "fps": 24, "max_frames": 121}),
                             tmp_path)
    plan = engine.plan("landscape", "small", 150)
    assert plan.fps == 24 and plan.n_frames == 121  # 5 s at 24 fps, snapped to 4k+1


def test_pull_without_a_network_says_so(tmp_path):
    (tmp_path / "config.toml").write_text('[models.wan]\nfamily = "wan"\npath = "nobody/no-such-model"\n')
    r = CliRunner().invoke(app, ["models", "pull", "wan", "--data-dir", str(tmp_path)],
                           env={"HF_HUB_OFFLINE": "1", "COLUMNS": "200"})
    assert r.exit_code == 1 and "could not download nobody/no-such-model" in r.output
    assert "Traceback" not in r.output
