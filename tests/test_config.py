"""Settings: flags over SORAKIT_* variables over config.toml; bad values are named."""

from __future__ import annotations

import pytest

from sorakit.config import ConfigError, load_settings


def test_precedence(tmp_path):
    (tmp_path / "config.toml").write_text('port = 9000\nworkers = 3\nblocked_terms = ["a", "b"]\n'
                                          'link_ttl_seconds = 60\n[models]\nfancy = "preview"\n')
    env = {"SORAKIT_DATA_DIR": str(tmp_path), "SORAKIT_WORKERS": "5", "SORAKIT_BLOCKED_TERMS": "x, y"}
    s = load_settings({"port": None, "preview_pace": 2.5}, env=env)
    assert s.data_dir == tmp_path and s.port == 9000 and s.workers == 5 and s.preview_pace == 2.5
    assert s.blocked_terms == ["x", "y"] and s.link_ttl_seconds == 60 and s.models == {"fancy": "preview"}
    assert load_settings({"workers": 7, "data_dir": tmp_path}, env=env).workers == 7


def test_defaults(tmp_path):
    s = load_settings({"data_dir": tmp_path}, env={})
    assert (s.host, s.port, s.workers, s.max_frames, s.link_ttl_seconds) == ("127.0.0.1", 8000, 1, 750, 86400)
    assert s.finished_window_seconds == 15 and s.lease_seconds == 30 and s.max_attempts == 3
    assert s.blocked_terms == []


@pytest.mark.parametrize("toml,word", [("port = 'abc'", "port"), ("colour = 1", "colour"),
                                       ("workers = -1", "workers"), ("port = [", "config.toml")])
def test_bad_values_name_the_setting(tmp_path, toml, word):
    (tmp_path / "config.toml").write_text(toml)
    with pytest.raises(ConfigError, match=word):
        load_settings({"data_dir": tmp_path}, env={})


def test_bad_environment_value(tmp_path):
    with pytest.raises(ConfigError, match="max_frames"):
        load_settings({"data_dir": tmp_path}, env={"SORAKIT_MAX_FRAMES": "lots"})
