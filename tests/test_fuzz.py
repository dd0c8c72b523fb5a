"""Property-based fuzzing (hypothesis) of everything that reads untrusted input.

The property, for every area: an input either works or raises an ``AF2Error`` (nothing else), no
single input takes more than 10 s, and the data checker never opens a file outside the data root.

The default run tries a few hundred seeded inputs per area (seconds). The campaign behind
``pytest -m fuzz`` tries >= 10,000 audio inputs, 5,000 manifests, every checkpoint corruption the
issue lists plus generated ones, and 2,000 request files; each test prints how many it tried.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from af2.errors import AF2Error

TRIED: Counter = Counter()
SLOWEST: dict[str, float] = {}
LIMIT_S = 10.0


def _timed(area: str, fn, *args, **kwargs):
    """Run ``fn``; an AF2Error is an accepted outcome. Counts the input and checks the time bound."""
    t0 = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    except AF2Error:
        return None
    finally:
        took = time.perf_counter() - t0
        TRIED[area] += 1
        SLOWEST[area] = max(SLOWEST.get(area, 0.0), took)
        assert took < LIMIT_S, f"{area}: one input took {took:.1f} s"


def _run(prop, n: int, area: str, capsys) -> None:
    TRIED[area] = 0
    settings(max_examples=n, derandomize=True, database=None, deadline=timedelta(seconds=LIMIT_S),
             suppress_health_check=list(HealthCheck), print_blob=True)(prop)()
    with capsys.disabled():
        print(f"\nfuzz {area}: {TRIED[area]} inputs tried, 0 exceptions outside AF2Error, "
              f"slowest {SLOWEST.get(area, 0.0):.2f} s")
    assert TRIED[area] > 0


# ---------------------------------------------------------------------------------------------
# audio front end: arrays and mutated files


def _seed_files() -> list[bytes]:
    t = np.arange(8000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    out = []
    for fmt, subtype in (("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"),
                         ("MP3", "MPEG_LAYER_III"), ("WAV", "PCM_U8")):
        buf = io.BytesIO()
        sf.write(buf, np.stack([x, -x], axis=1), 16000, format=fmt, subtype=subtype)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_files()


@st.composite
def mutated_audio(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "u32", "u16", "splice"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            data = data[:pos]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(max_size=64))
        elif op in ("u32", "u16") and pos < 64:  # header fields: rates, sizes, format tags
            value = draw(st.sampled_from([0, 1, 0x1234, 0x7FFFFFFF, 0xFFFFFFFF, 2**16 - 1, 8000, 768_001]))
            packed = struct.pack("<I", value & 0xFFFFFFFF) if op == "u32" else struct.pack("<H", value & 0xFFFF)
            data[pos:pos + len(packed)] = packed
        elif op == "splice":
            other = draw(st.sampled_from(SEEDS))
            data = data[:pos] + other[pos:]
    return bytes(data)


RATES = st.one_of(st.integers(-10, 2_000_000), st.sampled_from([0, 999, 1000, 768_000, 768_001, 2**31 - 1,
                                                                2**63 - 1, 10**30, True]), st.floats())
ARRAYS = hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.int16, np.int8, np.uint8, np.int32, np.bool_,
                                           np.complex64]),
                    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=64))
# Paths as users mistype them: devices, folders, NUL bytes, over-long names, non-audio files.
PATHS = st.one_of(st.sampled_from(["/dev/zero", "/dev/null", "/proc/self/environ", "/", ".", "a\x00b.wav", "x" * 5000,
                                   "/etc/passwd", "", "~", "missing.wav"]), st.text(max_size=30))
MAX_SECONDS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.001, 1, 300]))


def _check_decoded(audio) -> None:
    if audio is not None:
        assert np.isfinite(audio.samples).all() and np.abs(audio.samples).max(initial=0) <= 1.0
        assert audio.truncated_s is None or audio.truncated_s >= 0


def _audio_property():
    from af2.audio import load_audio, make_windows
    from af2.config import AudioConfig

    @given(source=st.one_of(mutated_audio(), st.tuples(ARRAYS, RATES), st.binary(max_size=256), PATHS),
           max_seconds=MAX_SECONDS)
    def prop(source, max_seconds):
        audio = _timed("audio", load_audio, source, max_seconds=max_seconds)
        _check_decoded(audio)
        if audio is not None:
            assert make_windows(audio.samples, AudioConfig(max_windows=2)).shape[1] == 160_000

    return prop


def test_fuzz_audio(capsys):
    _run(_audio_property(), 300, "audio", capsys)


@pytest.mark.fuzz
def test_fuzz_audio_campaign(capsys):
    _run(_audio_property(), 10_000, "audio", capsys)


# ---------------------------------------------------------------------------------------------
# manifests: the reader and the checker


NAMES = st.one_of(st.sampled_from(["ok.wav", "../../secret.wav", "/proc/self/environ", "link.wav", "x" * 300,
                                   "sub/../ok.wav", "..", "", "/", "nul\x00.wav", "ok.wav/..", "fifo"]),
                  st.text(max_size=20))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**400),
                    st.floats(), st.text(max_size=10))
JSON_VALUES = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                           st.dictionaries(st.text(max_size=5), kids, max_size=3)),
                           max_leaves=10)


@st.composite
def manifest_entry(draw) -> dict:
    entry = {"name": draw(st.one_of(NAMES, JSON_VALUES)), "prompt": draw(st.one_of(st.text(max_size=10), SCALARS)),
             "output": draw(st.one_of(st.text(max_size=10), SCALARS)),
             "duration": draw(st.one_of(st.floats(), st.integers(), SCALARS)), "id": draw(st.one_of(st.text(), SCALARS))}
    drop = draw(st.sets(st.sampled_from(sorted(entry)), max_size=2))
    return {k: v for k, v in entry.items() if k not in drop}


@st.composite
def manifest_text(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["json", "jsonl", "raw"]))
    split_path = draw(st.one_of(st.sampled_from(["audio", "", "/tmp", "..", "../..", "/"]), JSON_VALUES))
    entries = draw(st.lists(st.one_of(manifest_entry(), JSON_VALUES), max_size=5))
    if kind == "raw":
        return draw(st.sampled_from([".json", ".jsonl"])), draw(st.one_of(
            st.binary(max_size=200), st.just(b"[" * 50_000), st.just(b'{"data": {"0": 1e999999}}')))
    if kind == "json":
        doc = {"split_path": split_path, "data": {str(i): e for i, e in enumerate(entries)}}
        if draw(st.booleans()):
            doc["total_num"] = draw(st.one_of(st.integers(), SCALARS))
        return ".json", json.dumps(doc).encode()
    lines = [json.dumps({**e, "split_path": split_path} if isinstance(e, dict) else e) for e in entries]
    return ".jsonl", "\n".join(lines).encode()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz-data")
    root = base / "root"
    (root / "audio").mkdir(parents=True)
    sf.write(root / "audio" / "ok.wav", np.zeros(1600), 16000)
    sf.write(base / "secret.wav", np.zeros(1600), 16000)
    (root / "audio" / "link.wav").symlink_to(base / "secret.wav")
    return root


def _manifest_property(root: Path):
    from af2.data import check
    from af2.data.manifest import read_manifest

    opened: list[Path] = []
    real = check.probe

    @given(doc=manifest_text())
    def prop(doc):
        suffix, payload = doc
        path = root.parent / f"manifest{suffix}"
        path.write_bytes(payload)
        items = _timed("manifests", read_manifest, path)
        if items is not None:
            assert all(isinstance(i.duration, float) and np.isfinite(i.duration) for i in items.items)
        check.probe = lambda p: opened.append(Path(p)) or real(p)
        try:
            report = check.check_manifests([path], root)  # never raises: every problem is counted
        finally:
            check.probe = real
        assert report.items >= 0
        outside = [p for p in opened if not Path(p).resolve().is_relative_to(root.resolve())]
        assert not outside, f"read outside the data root: {outside}"

    return prop


def test_fuzz_manifests(data_root, capsys):
    _run(_manifest_property(data_root), 200, "manifests", capsys)


@pytest.mark.fuzz
def test_fuzz_manifests_campaign(data_root, capsys):
    _run(_manifest_property(data_root), 5_000, "manifests", capsys)


# ---------------------------------------------------------------------------------------------
# checkpoints: every corruption the issue lists, then generated ones


def _listed_corruptions() -> list[tuple[str, str, bytes]]:
    """(which loader, file, new content) for each corruption issue 12 names."""
    deep = b"[" * 100_000 + b"]" * 100_000
    return [
        ("official", "safe_ckpt/metadata.json", b'{"../../outside/evil": {}}'),
        ("official", "safe_ckpt/metadata.json", b'{"/etc/passwd": {}}'),
        ("official", "safe_ckpt/metadata.json", b'{"\xff\xfe": {}}'),
        ("official", "safe_ckpt/metadata.json", deep),
        ("official", "safe_ckpt/metadata.json", b"{broken"),
        ("official", "safe_ckpt/metadata.json", b"[]"),
        ("official", "safe_ckpt/metadata.json", b"{}"),
        ("official", "tokenizer/tokenizer.json", b'{"model": {"type": "nonsense"}}'),
        ("official", "tokenizer/tokenizer.json", b"\xff\x00garbage"),
        ("official", "lm_config.json", b"[1, 2]"),
        ("official", "lm_config.json", b'{"model_type": "qwen2", "hidden_size": "wide"}'),
        ("official", "lm_config.json", b'{"model_type": "qwen2", "num_hidden_layers": 1000000000}'),
        ("official", "lm_config.json", b'{"model_type": "qwen2", "vocab_size": 10000000000}'),
        ("official", "lm_config.json", b'{"model_type": "qwen2", "hidden_size": -64}'),
        ("official", "lm_config.json", deep),
        ("official", "clap_ckpt/epoch_16.pt", b"x"),
        ("official", "clap_ckpt/epoch_16.pt", b"PK\x03\x04" + b"\x00" * 40),
        ("official", "clap_ckpt/epoch_16.pt", b"\x80\x04K\x05."),
        ("official", "safe_ckpt/model_chunk_0.safetensors", b"not a safetensors file"),
        ("official", "safe_ckpt/model_chunk_0.safetensors", struct.pack("<Q", 2**62) + b"{}"),
        ("ours", "config.json", b"[]"),
        ("ours", "config.json", b"{malformed"),
        ("ours", "config.json", b'{"htsat": {"depths": 5}}'),
        ("ours", "config.json", b'{"vocab_size": 10000000000}'),
        ("ours", "config.json", b'{"lm": {"model_type": "qwen2", "num_hidden_layers": 1000000000}}'),
        ("ours", "config.json", b'{"audio": {"max_windows": -1}}'),
        ("ours", "model.safetensors", b""),
        ("ours", "model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}"),
    ]


@pytest.fixture(scope="module")
def pristine(fixture_dir, tmp_path_factory):
    """The fixture's official checkpoint and the same model in our format."""
    from af2.checkpoint.folder import save_pretrained
    from af2.checkpoint.official import load_official
    from af2.parity import fixture_config

    base = tmp_path_factory.mktemp("fuzz-ckpt")
    official = Path(shutil.copytree(fixture_dir / "checkpoint", base / "official"))
    model, tokenizer, _ = load_official(official, cfg=fixture_config(fixture_dir))
    ours = save_pretrained(model, base / "ours", tokenizer)
    return {"official": official, "ours": ours, "cfg": fixture_config(fixture_dir)}


def _load_each(which: str, folder: Path, cfg) -> None:
    """Every loader a user reaches: the full official load, or our format's config + weights."""
    from af2.checkpoint.folder import load_pretrained_weights, read_config
    from af2.checkpoint.official import load_official
    from af2.model.af2 import AF2Model

    if which == "official":
        load_official(folder, cfg=cfg)
    else:
        model = AF2Model(read_config(folder))
        load_pretrained_weights(model, folder)


def _corrupt_and_load(pristine, which: str, name: str, content: bytes, work: Path) -> None:
    folder = work / which
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(pristine[which], folder)
    target = folder / name
    if not target.exists() and name.startswith("clap_ckpt/"):
        target = next((folder / "clap_ckpt").glob("epoch_*.pt"))
    target.write_bytes(content)
    _timed("checkpoints", _load_each, which, folder, pristine["cfg"])


def _listed(pristine, work: Path, capsys) -> None:
    TRIED["checkpoints"] = 0
    for which, name, content in _listed_corruptions():
        _corrupt_and_load(pristine, which, name, content, work)
    with capsys.disabled():
        print(f"\nfuzz checkpoints: {TRIED['checkpoints']} listed corruptions, 0 exceptions outside AF2Error")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fuzz_listed_checkpoint_corruptions(pristine, tmp_path, capsys):
    _listed(pristine, tmp_path, capsys)


def _checkpoint_property(pristine, work: Path):
    files = [("official", "safe_ckpt/metadata.json"), ("official", "safe_ckpt/model_chunk_0.safetensors"),
             ("official", "lm_config.json"), ("official", "clap_ckpt/epoch_16.pt"), ("ours", "config.json"),
             ("ours", "model.safetensors")]

    @given(where=st.sampled_from(files), data=st.data())
    def prop(where, data):
        which, name = where
        original = (pristine[which] / name).read_bytes() if (pristine[which] / name).exists() else \
            next((pristine[which] / "clap_ckpt").glob("epoch_*.pt")).read_bytes()
        pos = data.draw(st.integers(0, len(original)))
        op = data.draw(st.sampled_from(["truncate", "flip", "insert"]))
        if op == "truncate":
            content = original[:pos]
        elif op == "flip":
            content = original[:pos] + bytes([(original[pos:pos + 1] or b"\x00")[0] ^ 0xFF]) + original[pos + 1:]
        else:
            content = original[:pos] + data.draw(st.binary(min_size=1, max_size=16)) + original[pos:]
        _corrupt_and_load(pristine, which, name, content, work)

    return prop


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fuzz_checkpoints(pristine, tmp_path, capsys):
    _run(_checkpoint_property(pristine, tmp_path), 30, "checkpoints", capsys)


@pytest.mark.fuzz
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fuzz_checkpoints_campaign(pristine, tmp_path, capsys):
    _listed(pristine, tmp_path, capsys)
    _run(_checkpoint_property(pristine, tmp_path), 500, "checkpoints", capsys)


# ---------------------------------------------------------------------------------------------
# request files of `af2 ask --input` and the resumable output


@st.composite
def request_file(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["good", "typed", "json", "raw"]))
        if kind == "good":
            line = json.dumps({"id": draw(st.one_of(st.text(max_size=5), st.integers())), "audio": "a.wav",
                               "question": draw(st.text(min_size=1, max_size=20))})
        elif kind == "typed":
            line = json.dumps({k: draw(JSON_VALUES) for k in draw(st.sets(st.sampled_from(["id", "audio",
                                                                                          "question", "error"])))})
        elif kind == "json":
            line = json.dumps(draw(JSON_VALUES))
        else:
            lines.append(draw(st.binary(max_size=40)).replace(b"\n", b""))
            continue
        lines.append(line.encode())
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n", b'\n{"id": "torn", "ans']))


def _requests_property(work: Path):
    from af2.ask_file import open_output, read_requests
    from af2.jsonl import read_jsonl

    @given(payload=request_file(), output=request_file())
    def prop(payload, output):
        path, out = work / "q.jsonl", work / "a.jsonl"
        path.write_bytes(payload)
        requests = _timed("requests", read_requests, path)
        for r in requests or ():
            assert all(isinstance(r[k], str) and r[k].strip() for k in ("id", "audio", "question"))
        out.write_bytes(output)
        open_output(out)  # resume view: afterwards valid JSONL, one record per id
        found = read_jsonl(out, strict=True)
        assert not found.torn and not found.bad_lines
        ids = [r["id"] for _, r in found.records]
        assert len(ids) == len(set(map(str, ids)))

    return prop


def test_fuzz_requests(tmp_path, capsys):
    _run(_requests_property(tmp_path), 200, "requests", capsys)


@pytest.mark.fuzz
def test_fuzz_requests_campaign(tmp_path, capsys):
    _run(_requests_property(tmp_path), 2_000, "requests", capsys)
