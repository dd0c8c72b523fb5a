"""Checkpoint loading: real-size key maps, our format's round trip, damaged files fail loudly."""

from __future__ import annotations

import copy

import json
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from af2.checkpoint.folder import load_pretrained_weights, read_config, save_pretrained
from af2.checkpoint.official import alias_target, load_official, official_to_ours, ours_to_official
from af2.errors import CheckpointError
from af2.config import af2_config
from af2.model.af2 import AF2Model
from af2.parity import fixture_config


@pytest.mark.parametrize("size", ["0.5b", "1.5b", "3b"])
def test_real_size_manifest_maps_one_to_one(size, fixture_dir):
    manifest = json.loads((fixture_dir.parent / f"af2-{size}-param-manifest.json").read_text())
    cfg = af2_config(size)
    with torch.device("meta"):
        model = AF2Model(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    entries = {e["name"]: tuple(e["shape"]) for e in manifest["state_dict"]}
    hit: dict[str, str] = {}
    unmapped = []
    for name, shape in entries.items():
        target = alias_target(name)
        if target is not None:
            assert entries[target] == shape, name
            if name == "lang_encoder.lm_head.weight":
                hit.setdefault("lm.lm_head.weight", name)
            continue
        key = official_to_ours(name)
        if key not in ours or ours[key] != shape:
            unmapped.append((name, key, shape, ours.get(key)))
            continue
        assert key not in hit, f"{name} and {hit[key]} both map to {key}"
        hit[key] = name
        assert ours_to_official(key) == name.replace("clap.afclap.", "clap.nvclap.")
    assert unmapped == []
    assert sorted(set(ours) - set(hit)) == []
    # Our parameter count equals the official unique count (tied head counted once).
    n = sum(p.numel() for p in model.parameters())
    assert n == manifest["unique_parameter_count"]


def test_save_and_from_pretrained_round_trip(official_model, tmp_path):
    model, tokenizer, _ = official_model
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.backend_tokenizer.enable_truncation(max_length=16)  # as a trainer's tokenizer
    out = save_pretrained(model, tmp_path / "m", tokenizer)
    assert json.loads((out / "tokenizer.json").read_text())["truncation"] is None  # users' prompts are never cut
    cfg = read_config(out)
    assert cfg == model.cfg
    again = AF2Model(cfg)
    load_pretrained_weights(again, out)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.fixture
def ckpt_copy(fixture_dir, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(fixture_dir / "checkpoint", dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def _load(ckpt, fixture_dir):
    return load_official(ckpt, cfg=fixture_config(fixture_dir))


def test_missing_chunk_is_named(ckpt_copy, fixture_dir):
    (ckpt_copy / "safe_ckpt" / "model_chunk_0.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model_chunk_0.safetensors.*missing"):
        _load(ckpt_copy, fixture_dir)


def _edit_chunk(ckpt, fn):
    path = ckpt / "safe_ckpt" / "model_chunk_0.safetensors"
    sd = load_file(str(path))
    fn(sd)
    save_file(sd, str(path))


def test_wrong_shape_is_named(ckpt_copy, fixture_dir):
    key = "audio_transformer_clap.layer_stack.0.slf_attn.w_qs.weight"
    _edit_chunk(ckpt_copy, lambda sd: sd.__setitem__(key, torch.zeros(3, 3)))
    with pytest.raises(CheckpointError, match=r"wrong shape.*w_qs"):
        _load(ckpt_copy, fixture_dir)


def test_unexpected_key_is_named(ckpt_copy, fixture_dir):
    _edit_chunk(ckpt_copy, lambda sd: sd.__setitem__("lang_encoder.model.surprise.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"unexpected.*surprise"):
        _load(ckpt_copy, fixture_dir)


def test_missing_key_is_named(ckpt_copy, fixture_dir):
    key = "lang_encoder.model.norm.weight"
    _edit_chunk(ckpt_copy, lambda sd: sd.pop(key))
    with pytest.raises(CheckpointError, match=r"missing.*lm\.model\.norm\.weight"):
        _load(ckpt_copy, fixture_dir)


def test_inconsistent_alias_is_named(ckpt_copy, fixture_dir):
    key = "lang_encoder.old_decoder_blocks.0.mlp.up_proj.weight"
    _edit_chunk(ckpt_copy, lambda sd: sd.__setitem__(key, sd[key] + 1))
    with pytest.raises(CheckpointError, match=r"inconsistent alias.*old_decoder_blocks\.0\.mlp\.up_proj"):
        _load(ckpt_copy, fixture_dir)


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/af2-pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_that_would_run_code_is_refused(ckpt_copy, fixture_dir, tmp_path):
    marker = tmp_path / "pwned"
    path = ckpt_copy / "clap_ckpt" / "epoch_16.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"module.audio_branch.x": _Exploit()}}, f)
    with pytest.raises(CheckpointError, match=r"epoch_16\.pt.*refused to unpickle"):
        _load(ckpt_copy, fixture_dir)
    assert not marker.exists()


def test_corrupt_safetensors_and_metadata(ckpt_copy, fixture_dir):
    (ckpt_copy / "safe_ckpt" / "model_chunk_0.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model_chunk_0.safetensors.*unreadable"):
        _load(ckpt_copy, fixture_dir)
    (ckpt_copy / "safe_ckpt" / "metadata.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="metadata.json.*not valid JSON"):
        _load(ckpt_copy, fixture_dir)


def test_convert_cli_writes_our_format(fixture_dir, tmp_path, capsys):
    import yaml

    from af2.cli import main
    from af2.config import config_to_dict

    # The fixture's HTSAT is tiny, not the released "large": describe it in a YAML override.
    arch = config_to_dict(fixture_config(fixture_dir))
    arch.pop("lm"), arch.pop("vocab_size")
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(arch))
    rc = main(["convert", str(fixture_dir / "checkpoint"), str(tmp_path / "ours"), "--config", str(tmp_path / "arch.yaml")])
    assert rc == 0
    model, _, _ = load_official(fixture_dir / "checkpoint", cfg=fixture_config(fixture_dir))
    again = AF2Model(read_config(tmp_path / "ours"))
    load_pretrained_weights(again, tmp_path / "ours")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert main(["convert", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_loads_straight_into_bf16(official_model, fixture_dir, tmp_path):
    from af2.checkpoint.folder import load_pretrained
    from af2.checkpoint.official import build_official

    model = official_model[0]
    want = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    direct = build_official(fixture_dir / "checkpoint", model.cfg, torch.bfloat16)
    out = save_pretrained(model, tmp_path / "m")
    ours = load_pretrained(out, torch.bfloat16)
    for loaded in (direct, ours):
        got = loaded.state_dict()
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)
        assert loaded.lm.lm_head.weight is loaded.lm.model.embed_tokens.weight


def test_tensor_file_converts_and_compares_chunk_by_chunk(tmp_path, monkeypatch):
    import af2.tensorfile
    from af2.tensorfile import TensorFile

    monkeypatch.setattr(af2.tensorfile, "CHUNK_BYTES", 64)  # many chunks for a small tensor
    a = torch.randn(13, 7)
    b = a.clone()
    b[-1, -1] += 1  # differs only in the last chunk
    save_file({"a": a, "a2": a.clone(), "b": b, "i": torch.arange(5)}, str(tmp_path / "t.safetensors"))
    f = TensorFile(tmp_path / "t.safetensors")
    assert torch.equal(f.read("a"), a)
    assert torch.equal(f.read("a", torch.bfloat16), a.to(torch.bfloat16))
    assert torch.equal(f.read("i", torch.bfloat16), torch.arange(5))  # integers keep their dtype
    assert f.same_bytes("a", f, "a2") and not f.same_bytes("a", f, "b") and not f.same_bytes("a", f, "i")
    rows = torch.empty(2, 7, dtype=torch.bfloat16)
    assert f.read_into("a", rows, first=11) is rows and torch.equal(rows, a[11:].to(torch.bfloat16))
    with pytest.raises(ValueError, match="asked for 14 from row 12"):
        f.read_into("a", torch.empty(2, 7), first=12)
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "t.safetensors").read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="cut.safetensors.*unreadable"):
        TensorFile(tmp_path / "cut.safetensors")


def test_official_chunks_answer_membership_from_their_headers(fixture_dir, monkeypatch):
    from af2.checkpoint.official import read_official_chunks
    from af2.tensorfile import TensorFile

    chunks = read_official_chunks(fixture_dir / "checkpoint")
    monkeypatch.setattr(TensorFile, "read_into", lambda *a, **k: pytest.fail("a tensor was read"))
    try:
        assert all(key in chunks for key in list(chunks)) and "lang_encoder.nothing" not in chunks
    finally:
        chunks.close()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_every_non_finite_value_is_found(dtype, value):
    from af2.checkpoint.weights import check_finite

    ok = {"a": torch.randn(1000).to(dtype), "i": torch.arange(3), "empty": torch.zeros(0), "scalar": torch.tensor(2.0)}
    assert check_finite(ok, "src") == []
    for where in (0, 517, -1):
        bad = torch.randn(33, 31).to(dtype)
        bad.view(-1)[where] = value
        with pytest.raises(CheckpointError, match="src: 1 tensor.*NaN or Inf.*e.g. b;"):
            check_finite({**ok, "b": bad}, "src", strict=True)


def test_read_state_quantizes_a_slice_of_rows_at_a_time(monkeypatch):
    import af2.checkpoint.weights as weights
    from af2.model.quant import quantize_rows

    monkeypatch.setattr(weights, "_SLICE", 10)  # two rows of 4 values per slice
    w, b = torch.randn(11, 4), torch.randn(11)
    with torch.device("meta"):
        expected = {"l.weight": torch.empty(11, 4, dtype=torch.int8), "l.scale": torch.empty(11, dtype=torch.bfloat16),
                    "l.bias": torch.empty(11)}
    stored = weights.InMemory({"w": w, "b": b})
    state = weights.read_state({"l.weight": (stored, "w"), "l.bias": (stored, "b")}, expected, torch.bfloat16)
    codes, scale = quantize_rows(w.to(torch.bfloat16))  # as if loaded in bf16, then quantized
    assert state.keys() == expected.keys()
    assert torch.equal(state["l.weight"], codes) and torch.equal(state["l.scale"], scale)
    assert torch.equal(state["l.bias"], b.to(torch.bfloat16))


def test_folder_naming_its_base_lm_loads_in_every_dtype(official_model, fixture_dir, open_gates, tmp_path):
    """A model folder that holds only the trained weights (config.json names the base LM) is built
    from that base LM by load_pretrained and af2.load, in fp32 exactly, and in int8."""
    from transformers import AutoConfig, AutoModelForCausalLM

    import af2
    from af2.base_lm import load_base_lm
    from af2.checkpoint.folder import EXTRA_ROWS, BaseRef, is_base_key, load_pretrained
    from af2.model.af2 import EMBEDDING_KEY
    from af2.model.quant import Int8Linear

    _, tokenizer, _ = official_model
    cfg = official_model[0].cfg
    lm_cfg = dict(cfg.lm)
    torch.manual_seed(3)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(lm_cfg.pop("model_type"), **lm_cfg)).save_pretrained(
        str(tmp_path / "base"))
    cfg, lm, base_vocab = load_base_lm(str(tmp_path / "base"), cfg, cfg.vocab_size)
    model = AF2Model(cfg, lm=lm)
    open_gates(model, torch.Generator().manual_seed(0))
    folder = save_pretrained(model, tmp_path / "nano", tokenizer, base=BaseRef(str(tmp_path / "base"), base_vocab))

    stored = load_file(str(folder / "model.safetensors"))
    assert not [k for k in stored if is_base_key(k)]
    assert stored[EXTRA_ROWS + EMBEDDING_KEY].shape[0] == cfg.vocab_size - base_vocab > 0
    want, got = model.state_dict(), load_pretrained(folder, torch.float32).state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    quantized = load_pretrained(folder, torch.float32, int8=True)
    assert isinstance(quantized.lm.model.layers[0].decoder_layer.mlp.up_proj, Int8Linear)
    audio = fixture_dir / "audio" / "short.wav"
    exact = af2.load(folder, dtype="float32").ask(audio, "what is this?", max_new_tokens=4)
    assert exact.text == af2.AF2(model, tokenizer, official_model[2]).ask(audio, "what is this?", max_new_tokens=4).text
    assert af2.load(folder, dtype="int8").dtype_name == "int8"


def test_written_weights_are_readable_like_any_new_file(tmp_path):
    """safetensors creates its files 0600; a model folder or checkpoint is shared, so its files follow the umask."""
    import os

    from af2.jsonl import _UMASK
    from af2.train.checkpoint import save_weights

    save_weights({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~_UMASK
    assert torch.equal(load_file(str(tmp_path / "model.safetensors"))["w"], torch.zeros(2))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary file left behind
