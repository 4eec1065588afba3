"""The model catalogue: ``sorakit models presets``, ``sorakit models add NAME --preset P`` (a config
section the server reads back as the preset, the rest of config.toml kept) and ``sorakit models
list`` (what each model can do, its speed switches, whether its weights are here)."""

from __future__ import annotations

import textwrap

import pytest
from typer.testing import CliRunner

from sorakit.cli.main import app
from sorakit.config import load_settings
from sorakit.engines.catalogue import PRESETS, remove_section, toml_section
from sorakit.engines.families import FAMILIES
from sorakit.engines.models import model_specs, parse_spec

ENV = {"COLUMNS": "250"}
EXISTING = textwrap.dedent("""\
    # my server: one GPU, two workers
    workers = 2  # keep in step with the GPUs
    default_engine = "preview"

    [models.old]   # the first model I had
    family = "wan"
    path = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    steps = 30
""")


def cli(*args):
    return CliRunner().invoke(app, ["models", *map(str, args)], env=ENV)


def specs(data_dir) -> dict:
    return {s.name: s for s in model_specs(load_settings({"data_dir": data_dir}, env={}).models)}


def test_every_preset_is_a_valid_table_of_a_known_family_with_its_sources():
    assert {"wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-ti2v-5b", "ltx-video-0.9.7-dev", "ltx-2",
            "hunyuanvideo-1.5", "cogvideox-5b"} <= set(PRESETS)
    for preset in PRESETS.values():
        assert preset.family in FAMILIES, preset.name
        assert preset.sources and all(url.startswith("https://") for url in preset.sources)
        spec = parse_spec("m", preset.table)
        assert spec.path and spec.dtype == "bfloat16" and spec.fps and spec.steps
        family = FAMILIES[spec.family]
        for w, h in spec.resolution.values():  # the card's sizes are on the family's size rule
            assert w % family.multiple == 0 and h % family.multiple == 0, preset.name
        if spec.max_frames:
            assert (spec.max_frames - 1) % family.frame_step == 0, preset.name


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_add_writes_a_section_read_back_as_the_preset(tmp_path, preset):
    r = cli("add", "m1", "--preset", preset, "--data-dir", tmp_path)
    assert r.exit_code == 0, r.output
    assert specs(tmp_path)["m1"] == parse_spec("m1", PRESETS[preset].table)
    text = (tmp_path / "config.toml").read_text()
    assert f"# sorakit models add m1 --preset {preset}" in text
    assert all(f"# source: {url}" in text for url in PRESETS[preset].sources)


def test_add_keeps_the_rest_of_the_file_and_refuses_a_name_in_use(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(EXISTING)
    r = cli("add", "wan13", "--preset", "wan2.1-t2v-1.3b", "--data-dir", tmp_path)
    assert r.exit_code == 0, r.output
    assert "wan13: T2V, remix; weights missing: sorakit models pull wan13" in r.output
    text = config.read_text()
    assert text.startswith(EXISTING)  # comments and all, byte for byte
    assert set(specs(tmp_path)) == {"old", "wan13"} and specs(tmp_path)["old"].steps == 30

    for name in ("wan13", "old"):
        again = cli("add", name, "--preset", "ltx-2", "--data-dir", tmp_path)
        assert again.exit_code == 1 and "already in" in again.output and "--force" in again.output
        assert config.read_text() == text

    forced = cli("add", "wan13", "--preset", "ltx-2", "--device", "cpu", "--force", "--data-dir", tmp_path)
    assert forced.exit_code == 0, forced.output
    replaced = config.read_text()
    assert replaced.startswith(EXISTING) and replaced.count("[models.wan13]") == 1
    assert "--preset wan2.1-t2v-1.3b" not in replaced  # the old section's comments went with it
    spec = specs(tmp_path)["wan13"]
    assert spec.family == "ltx2" and spec.device == "cpu" and spec.path == "Lightricks/LTX-2"


def test_add_refuses_bad_names_presets_and_values_leaving_the_file_alone(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(EXISTING)
    assert cli("add", "x", "--preset", "sora-2", "--data-dir", tmp_path).exit_code == 2
    assert cli("add", "a.b", "--preset", "ltx-2", "--data-dir", tmp_path).exit_code == 2
    assert cli("add", "preview", "--preset", "ltx-2", "--data-dir", tmp_path).exit_code == 2
    r = cli("add", "gpu", "--preset", "ltx-2", "--device", "gpu0", "--data-dir", tmp_path)
    assert r.exit_code == 2 and "models.gpu.device" in r.output and "left as it was" in r.output
    assert config.read_text() == EXISTING
    (tmp_path / "alias").mkdir()
    (tmp_path / "alias" / "config.toml").write_text('[models]\nsy_8 = "preview"\n')
    inline = cli("add", "sy_8", "--preset", "ltx-2", "--force", "--data-dir", tmp_path / "alias")
    assert inline.exit_code == 1 and "edit it by hand" in inline.output


def test_remove_section_takes_sub_tables_and_leaves_the_neighbours_comments():
    text = textwrap.dedent("""\
        [models.a]
        family = "wan"
        [models.a.cache]
        type = "pab"
        # about b
        [models.b]
        family = "ltx"
    """)
    assert remove_section(text, "a") == "# about b\n[models.b]\nfamily = \"ltx\"\n"
    assert remove_section(text, "b") == "[models.a]\nfamily = \"wan\"\n[models.a.cache]\ntype = \"pab\"\n# about b\n"
    assert remove_section(text, "c") is None


def test_presets_lists_the_catalogue():
    r = cli("presets")
    assert r.exit_code == 0, r.output
    for name, preset in PRESETS.items():
        assert name in r.output and preset.table["path"] in r.output


def test_section_text_is_plain_toml_for_strings_that_need_escaping():
    import tomllib

    preset = PRESETS["wan2.1-t2v-1.3b"]
    section = toml_section("odd", preset, {"negative_prompt": 'say "no" \\ to\tthis\nplease'})
    assert tomllib.loads(section)["models"]["odd"]["negative_prompt"] == 'say "no" \\ to\tthis\nplease'


def test_list_shows_capabilities_speed_switches_and_weights_presence(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from tiny_pipelines import save_pipeline

    wan = save_pipeline("wan", tmp_path / "w" / "wan")
    ltx = save_pipeline("ltx", tmp_path / "w" / "ltx")
    (tmp_path / "config.toml").write_text(textwrap.dedent(f"""\
        [models.tiny-wan]
        family = "wan"
        path = "{wan}"
        image_path = "{tmp_path / 'nowhere'}"
        cache = {{type = "first_block", threshold = 0.1}}
        [models.tiny-ltx]
        family = "ltx"
        path = "{ltx}"
        device = "cpu"
        compile = "repeated_blocks"
        attention_backend = "_native_flash"
        vae_tiling = true
        [models.far]
        family = "cogvideox"
        path = "THUDM/CogVideoX-5b"
    """))
    r = CliRunner().invoke(app, ["models", "list", "--data-dir", str(tmp_path)],
                           env={**ENV, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in r.output.splitlines() if line.startswith("│")}
    assert rows["tiny-wan"] == ["wan", "T2V, I2V, remix, extend", "cache=first_block",
                                "present; I2V weights missing: sorakit models pull tiny-wan", "cuda"]
    assert rows["tiny-ltx"] == ["ltx", "T2V, I2V, remix, extend", "compile=repeated_blocks, attention=_native_flash, "
                                "vae_tiling", "present", "cpu"]
    assert rows["far"] == ["cogvideox", "T2V, remix", "-", "missing: sorakit models pull far", "cuda"]
    assert rows["preview"][1] == "T2V, I2V, remix, extend, audio"
