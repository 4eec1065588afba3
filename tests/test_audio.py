"""Sound through the whole pipe: the preview engine's procedural track, AAC muxed beside the
video, kept in sync by extensions, storyboards and variations, and switched off on request."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_error  # noqa: F401

from sorakit.engines.base import AudioTrack
from sorakit.engines.preview import SOUND_LABEL, placeholder_sound
from sorakit.media import audio
from sorakit.media.encode import probe


def _finished(api, task_id: str) -> dict:
    task = api.wait(task_id)
    assert task["status"] == "succeeded", task
    return task


def _path(api, gen: dict):
    return api.settings.media_dir / gen["id"] / "video.mp4"


def test_the_preview_sound_is_deterministic_synthetic_and_as_long_as_asked():
    a = placeholder_sound("a kite", 1, 2.0)
    assert a.samples.shape == (2, 96_000) and a.sample_rate == 48_000 and a.samples.dtype == np.float32
    assert np.array_equal(a.samples, placeholder_sound("a kite", 1, 2.0).samples)
    assert not np.array_equal(a.samples, placeholder_sound("a boat", 1, 2.0).samples)
    assert 0.02 < np.abs(a.samples).mean() and np.abs(a.samples).max() <= 1.0
    # pure tones: nearly all of the power sits in a handful of the 48,001 spectrum bins
    power = np.abs(np.fft.rfft(a.samples[0])) ** 2
    assert np.sort(power)[-60:].sum() > 0.9 * power.sum()


def test_a_preview_video_carries_an_aac_track_as_long_as_its_picture(api):
    task = _finished(api, api.create(prompt="a kite over a beach", n_frames=45).json()["id"])
    gen = task["generations"][0]
    assert gen["has_audio"] is True and task["has_audio"] is True
    video, sound = probe(_path(api, gen)), audio.probe(_path(api, gen))
    assert sound.codec == "aac" and sound.channels == 2 and sound.sample_rate == 48_000
    assert sound.title == SOUND_LABEL
    assert video.duration_s == pytest.approx(1.5) and sound.duration_s == pytest.approx(1.5, abs=0.03)
    # and it is the engine's sound: the decoded track matches the procedural one
    decoded = audio.read(_path(api, gen))
    made = placeholder_sound("a kite over a beach", task["seed"], 1.5).samples
    n = min(decoded.samples.shape[1], made.shape[1]) - 4096
    corr = np.corrcoef(decoded.samples[0, 2048:n], made[0, 2048:n])[0, 1]
    assert corr > 0.9, corr


def test_sound_can_be_turned_off_by_request_or_by_config(make_api):
    api = make_api(default_concurrency=5)
    task = _finished(api, api.create(prompt="quiet", n_frames=10, audio=False).json()["id"])
    assert task["generations"][0]["has_audio"] is False and audio.probe(_path(api, task["generations"][0])) is None
    silent = make_api(default_concurrency=5, audio=False)
    task = _finished(silent, silent.create(prompt="quiet", n_frames=10).json()["id"])
    assert audio.probe(_path(silent, task["generations"][0])) is None


def test_an_extension_keeps_the_sources_sound_then_adds_its_own(make_api):
    api = make_api(default_concurrency=5)
    source = _finished(api, api.create(prompt="a river", n_frames=30, seed=4).json()["id"])["generations"][0]
    r = api.client.post(f"/backend/project_y/profile/drafts/{source['id']}/long_video_extension",
                        json={"user_prompt": "a waterfall", "extension_duration_s": 1}, headers=api.alice)
    longer = _finished(api, r.json()["id"])["generations"][0]
    assert longer["has_audio"] is True
    assert audio.probe(_path(api, longer)).duration_s == pytest.approx(2.0, abs=0.03)
    before, after = audio.read(_path(api, source)).samples, audio.read(_path(api, longer)).samples
    head = slice(4096, 40_000)  # inside the first second, clear of codec edges
    assert np.corrcoef(before[0, head], after[0, head])[0, 1] > 0.9
    tail = slice(52_000, 52_000 + 35_904)  # the extension's second: another sound, as long as head
    assert abs(np.corrcoef(before[0, head], after[0, tail])[0, 1]) < 0.5


def test_a_storyboards_sound_changes_at_each_cut_and_lasts_the_shots(make_api):
    api = make_api(default_concurrency=5)
    shots = [{"prompt": "dawn", "duration_s": 1}, {"prompt": "noon", "duration_s": 1}]
    r = api.client.post("/backend/nf/create/storyboard", json={"shots": shots}, headers=api.alice)
    gen = _finished(api, r.json()["id"])["generations"][0]
    track = audio.read(_path(api, gen)).samples[0]
    assert track.shape[0] / 48_000 == pytest.approx(2.0, abs=0.03)
    first, second = track[4096:44_000], track[52_000:92_000]
    spec = [np.abs(np.fft.rfft(x[:32_768])) for x in (first, second)]
    peaks = [set(np.argsort(s)[-3:]) for s in spec]
    assert peaks[0] != peaks[1]  # another chord after the cut


def test_each_variation_has_its_own_sound(make_api):
    api = make_api(default_concurrency=5)
    task = _finished(api, api.create(prompt="a bell", n_frames=30, nsamples=2).json()["id"])
    tracks = [audio.read(_path(api, g)).samples[0, 4096:40_000] for g in task["generations"]]
    assert all(g["has_audio"] for g in task["generations"])
    assert not np.allclose(tracks[0], tracks[1], atol=0.01)


def test_a_timeline_places_fits_and_resamples():
    tone = AudioTrack(np.ones((1, 100), np.float32) * 0.5, 100)  # 1 s of 0.5 at 100 Hz
    line = audio.Timeline()
    line.place(1.0, tone)
    out = line.render(3.0)
    assert out.sample_rate == audio.SAMPLE_RATE and out.samples.shape == (2, 3 * audio.SAMPLE_RATE)
    assert np.all(out.samples[:, : audio.SAMPLE_RATE - 10] == 0)  # silence before its place
    assert np.allclose(out.samples[:, audio.SAMPLE_RATE + 10: 2 * audio.SAMPLE_RATE - 10], 0.5)
    assert np.all(out.samples[:, 2 * audio.SAMPLE_RATE + 10:] == 0)  # padded after it, not stretched
    assert audio.Timeline().render(1.0) is None
