"""The audio front end against the official golden fixture, plus decoding and failure modes."""

from __future__ import annotations

import dataclasses
import json
import struct
import time
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from af2.audio import (AudioError, load_audio, log_mel, make_windows, max_read_seconds, normalize,
                       num_windows, pad_windows, prepare)
from af2.config import AudioConfig

CASES = ("short", "long", "stereo")


@pytest.fixture(scope="module")
def golden(fixture_dir):
    """(fixture folder, its AudioConfig, cases.json, expected tensors); fixture_dir is in conftest.py."""
    config = json.loads((fixture_dir / "config.json").read_text())
    cases = json.loads((fixture_dir / "cases.json").read_text())
    cfg = AudioConfig(max_windows=config["clap_config"]["max_num_window"],
                      window_seconds=config["clap_config"]["window_length"],
                      window_overlap_seconds=config["clap_config"]["window_overlap"])
    return fixture_dir, cfg, cases, load_file(fixture_dir / "expected.safetensors")


# ---------------------------------------------------------------------------------------------
# parity with the official front end


@pytest.mark.parametrize("case", CASES)
def test_windows_bit_exact(golden, case):
    fixture, cfg, cases, expected = golden
    windows, audio = prepare(fixture / cases["cases"][case]["file"], cfg)
    assert windows.dtype == torch.float32
    assert torch.equal(windows, expected[f"windows/{case}"])
    assert audio.channels == cases["cases"][case]["channels"]
    assert audio.duration_s == pytest.approx(cases["cases"][case]["duration_s"])
    assert audio.truncated_s == 0.0
    mask = torch.ones(windows.shape[0])
    assert torch.equal(mask, expected[f"window_mask/{case}"])


@pytest.mark.parametrize("case", CASES)
def test_log_mel_matches_official(golden, case):
    _, cfg, _, expected = golden
    mel = log_mel(expected[f"windows/{case}"], cfg)
    reference = expected[f"mel/{case}"]
    assert mel.shape == reference.shape == (reference.shape[0], 1001, 64)
    assert (mel - reference).abs().max().item() <= 5e-3


def test_batch_padding_matches_official(golden):
    _, cfg, _, expected = golden
    clips = [expected[f"windows/{case}"] for case in CASES]
    batch, mask = pad_windows(clips, cfg.max_windows)
    assert torch.equal(mask, expected["batch_window_mask"])
    assert batch.shape == (3, 3, cfg.window_samples)
    for i, clip in enumerate(clips):
        assert torch.equal(batch[i, : clip.shape[0]], clip)
        assert not batch[i, clip.shape[0]:].any()


def test_second_int16_round_trip_is_a_no_op():
    # The official CLAP.load_audio re-quantises every window in torch (float32 arithmetic); over
    # every value the first (numpy, float64) round trip can produce, it changes nothing.
    first = (np.arange(-32767, 32768) / 32767.0).astype(np.float32)
    x = torch.from_numpy(first)
    second = (torch.clamp(x, -1, 1) * 32767.0).to(torch.int16) / 32767.0
    assert second.dtype == torch.float32
    assert torch.equal(second, x)


def test_normalisation_in_float64_matters(golden):
    # Guards the float64 choice: the same steps in float32 would not reproduce the fixture.
    fixture, cfg, cases, expected = golden
    raw, _ = sf.read(fixture / cases["cases"]["long"]["file"], dtype="float32")
    x = raw / np.float32(max(abs(raw.max()), abs(raw.min())))
    q = ((np.clip(x, -1, 1) * np.float32(32767)).astype(np.int16) / np.float32(32767)).astype(np.float32)
    assert not torch.equal(make_windows(q, cfg), expected["windows/long"])


# ---------------------------------------------------------------------------------------------
# normalisation choices


def test_silence_gives_finite_zeros():
    audio = load_audio((np.zeros(16000), 16000))
    assert np.all(audio.samples == 0)
    mel = log_mel(make_windows(audio.samples, AudioConfig()))
    assert torch.isfinite(mel).all() and torch.all(mel == -100.0)


def test_all_positive_audio_keeps_official_remap():
    audio = load_audio((np.array([0.0, 0.2, 0.5]), 16000))
    assert audio.samples.tolist() == [-1.0, -6553 / 32767, 1.0]  # 2x/max - 1, then int16 truncation


def test_louder_than_full_scale_is_scaled():
    audio = load_audio((np.array([3.0, -6.0, 1.5]), 16000))
    assert audio.samples.tolist() == [16383 / 32767, -1.0, 8191 / 32767]
    assert np.array_equal(normalize(np.array([3.0, -6.0, 1.5])), audio.samples)


def test_channel_choice():
    stereo = np.stack([np.full(100, 0.5), np.full(100, -0.5)], axis=1) * np.linspace(-1, 1, 100)[:, None]
    first = load_audio((stereo, 16000)).samples
    mean = load_audio((stereo, 16000), channel="mean").samples
    assert np.array_equal(first, normalize(stereo[:, 0]))
    assert np.all(mean == 0)  # the two channels cancel


def test_int16_array_is_scaled_like_soundfile():
    pcm = (np.sin(np.arange(1000) / 7) * 20000).astype(np.int16)
    assert np.array_equal(load_audio((pcm, 16000)).samples, load_audio((pcm / 32768.0, 16000)).samples)


# ---------------------------------------------------------------------------------------------
# decoding


def _tone(seconds: float, rate: int, channels: int = 1, hz: float = 1000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * hz * t)
    return np.stack([x] + [0.3 * np.sin(2 * np.pi * 300 * t)] * (channels - 1), axis=1) if channels > 1 else x


def _write_m4a(path: Path, x: np.ndarray, rate: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(x.astype(np.float32)[None, :], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


@pytest.mark.parametrize("ext,fmt,subtype,rate", [
    ("wav", "WAV", "PCM_16", 16000), ("flac", "FLAC", "PCM_16", 22050), ("ogg", "OGG", "VORBIS", 32000),
    ("opus", "OGG", "OPUS", 48000), ("mp3", "MP3", "MPEG_LAYER_III", 16000), ("m4a", None, None, 24000)])
def test_formats_decode(tmp_path, ext, fmt, subtype, rate):
    path = tmp_path / f"tone.{ext}"
    x = _tone(2.0, rate)
    if ext == "m4a":
        _write_m4a(path, x, rate)
    else:
        sf.write(path, x, rate, format=fmt, subtype=subtype)
    audio = load_audio(path)
    assert audio.sample_rate == 16000 and audio.source_sample_rate == rate
    assert audio.duration_s == pytest.approx(2.0, abs=0.1)  # codec priming/padding
    assert audio.num_samples == pytest.approx(audio.kept_s * 16000, abs=1)
    assert np.abs(audio.samples).max() == 1.0
    spectrum = np.abs(np.fft.rfft(audio.samples))
    assert np.argmax(spectrum) * 16000 / audio.num_samples == pytest.approx(1000, abs=2)


def test_bytes_source_equals_path(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, _tone(1.0, 16000), 16000)
    assert np.array_equal(load_audio(path.read_bytes()).samples, load_audio(path).samples)


def test_stereo_44k_resampled_first_channel(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(path, _tone(3.0, 44100, channels=2), 44100, subtype="FLOAT")
    audio = load_audio(path)
    assert audio.channels == 2 and audio.source_sample_rate == 44100
    assert audio.num_samples == int(np.ceil(3.0 * 44100 * 16000 / 44100))
    spectrum = np.abs(np.fft.rfft(audio.samples))
    assert np.argmax(spectrum) * 16000 / audio.num_samples == pytest.approx(1000, abs=1)
    assert spectrum[300 * 3] < 1e-3 * spectrum.max()  # channel 1's 300 Hz tone is gone


def test_six_minutes_truncated_to_five(tmp_path):
    path = tmp_path / "six_minutes.wav"
    sf.write(path, _tone(360.0, 8000), 8000, subtype="PCM_16")
    audio = load_audio(path, max_seconds=300)
    assert audio.duration_s == 360.0 and audio.kept_s == 300.0 and audio.truncated_s == 60.0
    assert audio.num_samples == 300 * 16000


def test_ffmpeg_path_stops_early(tmp_path):
    path = tmp_path / "long.m4a"
    _write_m4a(path, _tone(5.0, 16000), 16000)
    audio = load_audio(path, max_seconds=1.0)
    assert audio.kept_s == 1.0 and audio.num_samples == 16000
    assert audio.truncated_s == pytest.approx(4.0, abs=0.1)


def _sparse_wav(path: Path, seconds: int, rate: int) -> None:
    """A PCM_16 mono WAV whose data is a hole in the file system: 8 hours cost no disk or time."""
    data_bytes = seconds * rate * 2
    header = (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", data_bytes))
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + data_bytes)


def test_eight_hour_file_is_read_only_up_to_the_limit(tmp_path):
    path = tmp_path / "eight_hours.wav"
    _sparse_wav(path, 8 * 3600, 16000)
    cfg = AudioConfig(max_windows=12)
    start = time.perf_counter()
    windows, audio = prepare(path, cfg)
    assert time.perf_counter() - start < 5.0
    assert audio.duration_s == 8 * 3600 and audio.kept_s == max_read_seconds(cfg) == 120.0
    assert audio.truncated_s == 8 * 3600 - 120.0
    assert windows.shape == (12, 160000) and torch.isfinite(windows).all()


def test_eight_hour_array_is_bounded():
    # 1 kHz is the lowest accepted rate (MIN_SAMPLE_RATE); a 10 Hz "8-hour" array is now refused.
    audio = load_audio((np.ones(8 * 3600 * 1000, dtype=np.int8), 1000), max_seconds=300)
    assert audio.kept_s == 300.0 and audio.truncated_s == 8 * 3600 - 300.0
    assert audio.num_samples == 300 * 16000


# ---------------------------------------------------------------------------------------------
# failures: each is an AudioError (a ValueError) naming the source


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    with pytest.raises(AudioError, match=r"empty\.wav.*empty \(0 bytes\)"):
        load_audio(path)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such audio file"):
        load_audio(tmp_path / "missing.wav")


@pytest.mark.parametrize("ext,fmt,subtype", [("flac", "FLAC", "PCM_16"), ("mp3", "MP3", "MPEG_LAYER_III")])
def test_truncated_file(tmp_path, ext, fmt, subtype):
    whole = tmp_path / f"whole.{ext}"
    sf.write(whole, np.random.default_rng(0).uniform(-0.5, 0.5, 48000), 16000, format=fmt, subtype=subtype)
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(AudioError, match=rf"cut\.{ext}: .*truncated"):
        load_audio(cut)


def test_truncated_wav_decodes_what_is_there(tmp_path):
    # libsndfile trusts the file length over a WAV header: documented behaviour, no error.
    whole = tmp_path / "whole.wav"
    sf.write(whole, _tone(2.0, 16000), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[: 44 + 16000 * 2])
    audio = load_audio(cut)
    assert audio.duration_s == audio.kept_s == 1.0


def test_corrupt_header(tmp_path):
    whole = tmp_path / "whole.wav"
    sf.write(whole, _tone(1.0, 16000), 16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8).tobytes() + whole.read_bytes()[64:])
    with pytest.raises(AudioError, match=r"bad\.wav: cannot decode"):
        load_audio(bad)


@pytest.mark.parametrize("name", ["noise.bin", "noise.m4a", None])
def test_random_bytes(tmp_path, name):
    noise = np.random.default_rng(2).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    source = noise if name is None else tmp_path / name
    if name is not None:
        source.write_bytes(noise)
    with pytest.raises(AudioError, match="cannot decode"):
        load_audio(source)


def test_zero_second_file(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0), 16000)
    with pytest.raises(AudioError, match=r"zero\.wav: contains no audio samples"):
        load_audio(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples(bad):
    x = np.zeros(100)
    x[10] = bad
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio((x, 16000))


def test_non_finite_samples_in_a_float_file(tmp_path):
    path = tmp_path / "nan.wav"
    x = _tone(0.5, 16000)
    x[5] = np.nan
    sf.write(path, x, 16000, subtype="DOUBLE")
    with pytest.raises(AudioError, match=r"nan\.wav: contains NaN"):
        load_audio(path)


def test_bad_array_shapes():
    with pytest.raises(AudioError, match="looks like"):
        load_audio((np.zeros((2, 1000)), 16000))
    with pytest.raises(AudioError, match="sample rate"):
        load_audio((np.zeros(1000), 0))


# ---------------------------------------------------------------------------------------------
# windowing and log-mel


@pytest.mark.parametrize("length,expected", [
    (1, 1), (160000, 1), (160001, 2), (436800, 3), (12 * 160000, 12), (12 * 160000 + 1, 12), (10**8, 12)])
def test_num_windows(length, expected):
    assert num_windows(length, AudioConfig(max_windows=12)) == expected


def test_make_windows_pads_and_truncates():
    cfg = AudioConfig(max_windows=2)
    x = np.arange(1, 250001, dtype=np.float64)
    windows = make_windows(x, cfg)
    assert windows.shape == (2, 160000)
    assert torch.equal(windows.flatten()[:250000], torch.from_numpy(x).float())
    assert not windows.flatten()[250000:].any()
    assert make_windows(np.arange(1, 400001.0), cfg).flatten()[-1] == 320000


def test_make_windows_with_overlap():
    cfg = dataclasses.replace(AudioConfig(max_windows=10), window_seconds=1.0, window_overlap_seconds=0.5)
    x = torch.arange(1, 20001, dtype=torch.float32)  # 1.25 s
    windows = make_windows(x, cfg)
    assert windows.shape == (2, 16000)  # 1 + ceil((20000 - 16000) / 8000)
    assert torch.equal(windows[1, :8000], windows[0, 8000:])
    assert windows[1, 11999] == 20000 and not windows[1, 12000:].any()


def test_pad_windows_rejects_inconsistent_clips():
    with pytest.raises(ValueError, match="max_windows"):
        pad_windows([torch.zeros(3, 10)], max_windows=2)
    with pytest.raises(ValueError, match="clip 1"):
        pad_windows([torch.zeros(1, 10), torch.zeros(1, 9)], max_windows=2)


def test_mel_filterbank_matches_independent_implementation():
    from transformers.audio_utils import mel_filter_bank

    from af2.audio.features import mel_filters

    cfg = AudioConfig()
    ours = mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max,
                        torch.device("cpu"), torch.float64)
    theirs = mel_filter_bank(num_frequency_bins=cfg.n_fft // 2 + 1, num_mel_filters=cfg.n_mels,
                             min_frequency=cfg.f_min, max_frequency=cfg.f_max, sampling_rate=cfg.sample_rate,
                             norm=None, mel_scale="htk")
    assert np.abs(ours.numpy() - theirs).max() < 1e-5


def test_log_mel_batched_and_differentiable():
    cfg = AudioConfig()
    x = torch.randn(2, 3, 16000, dtype=torch.float32, requires_grad=True)
    mel = log_mel(x, cfg)
    assert mel.shape == (2, 3, 101, 64) and mel.dtype == torch.float32
    assert torch.allclose(mel[1, 2], log_mel(x[1, 2].detach(), cfg), atol=1e-4)
    mel.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_U8", "PCM_32", "FLOAT"])
def test_ffmpeg_fallback_agrees_with_soundfile(tmp_path, subtype):
    from af2.audio.decode import _read_ffmpeg

    path = tmp_path / "stereo.wav"
    sf.write(path, _tone(0.5, 16000, channels=2), 16000, subtype=subtype)
    data, rate, total = _read_ffmpeg(str(path), None, path.name)
    reference = sf.read(path, dtype="float64", always_2d=True)[0]
    assert rate == 16000 and total == reference.shape[0]
    assert np.array_equal(data, reference)
