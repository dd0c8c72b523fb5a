"""The audio package's seams: the model never loads a decoder; one rate; one decoder and prober."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from af2.audio import HOP_LENGTH, SAMPLE_RATE, WINDOW_SAMPLES, WINDOW_SECONDS
from af2.audio.clips import RMS_FRAME, write_flac
from af2.audio.decode import load_audio, load_mono, probe
from af2.config import AudioConfig
from af2.errors import AudioError


def test_importing_the_model_loads_no_decoder():
    code = ("import sys, af2.model.af2, af2.config, af2.audio.features; "
            "print(sorted(m for m in ('av', 'soundfile', 'soxr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_constants_are_derived_from_one_rate():
    cfg = AudioConfig()
    assert (cfg.sample_rate, cfg.window_seconds, cfg.hop_length) == (SAMPLE_RATE, WINDOW_SECONDS, HOP_LENGTH)
    assert cfg.window_samples == WINDOW_SAMPLES == 160_000 and cfg.frames_per_window == 1001
    assert RMS_FRAME == 400  # 25 ms


def test_probe_reads_the_header_without_decoding(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, np.zeros((22050 * 2, 2)), 22050)
    header = probe(path)
    assert (header.sample_rate, header.channels) == (22050, 2) and header.duration_s == pytest.approx(2.0)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 8)
    with pytest.raises(AudioError, match="junk.wav"):
        probe(junk)


def test_load_mono_shares_the_decoder_and_keeps_the_level(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([0.25 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 440 * t)], axis=1)
    path = tmp_path / "s.wav"
    sf.write(path, stereo, 44100, subtype="FLOAT")
    mono = load_mono(path)
    assert mono.dtype == np.float32 and mono.shape == (SAMPLE_RATE,)
    assert np.abs(mono).max() == pytest.approx(0.25, abs=0.01)  # not peak-normalised like load_audio
    assert np.abs(load_audio(path).samples).max() == pytest.approx(1.0, abs=1e-4)
    out = write_flac(tmp_path / "c" / "x.flac", mono)
    assert probe(out).sample_rate == SAMPLE_RATE
    with pytest.raises(AudioError, match="no such audio file"):
        load_mono(tmp_path / "missing.wav")
