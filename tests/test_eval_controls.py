"""The audio controls of `af2 eval`: shuffled audio gives every item another clip, silence keeps each
clip's length and nothing else."""

import numpy as np
import soundfile as sf

from af2.eval.adapters import AUDIO_CONTROLS, shuffled_audio, silent_audio


def test_shuffled_audio_gives_no_item_its_own_clip():
    audios = ["a.wav", "a.wav", "b.wav", "c.wav", "a.wav"]
    out = shuffled_audio(audios)
    assert len(out) == len(audios)
    assert all(o != a for o, a in zip(out, audios))
    assert set(out) <= set(audios)


def test_shuffled_audio_of_one_distinct_file_keeps_it():
    assert shuffled_audio(["a.wav", "a.wav"]) == ["a.wav", "a.wav"]


def test_silence_is_as_long_as_each_clip_at_the_model_rate(tmp_path):
    rng = np.random.default_rng(0)
    first, second = tmp_path / "one.wav", tmp_path / "two.flac"
    sf.write(first, rng.uniform(-0.5, 0.5, 24_000).astype(np.float32), 16_000)  # 1.5 s
    sf.write(second, rng.uniform(-0.5, 0.5, 30_870).astype(np.float32), 44_100)  # 0.7 s
    out = silent_audio([str(first), str(second)], 16_000)
    assert [rate for _, rate in out] == [16_000, 16_000]
    assert [samples.shape for samples, _ in out] == [(24_000,), (11_200,)]
    assert all(not samples.any() for samples, _ in out)
    assert "silence" in AUDIO_CONTROLS and "own" in AUDIO_CONTROLS
