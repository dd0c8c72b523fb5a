"""Short example clips that ship with af2 (all from the corpus's held-out split, never trained on).

    import af2, af2.examples
    af2.load().ask(af2.examples.clip("clarinet"), "Which instrument is playing?")

| name       | what                                                                 | licence                      |
|------------|----------------------------------------------------------------------|------------------------------|
| directions | Piper TTS (voice en_US-joe-medium): "Excuse me, do you know where the museum on Main Street is?" | voice CC0; text written for af2 (Apache-2.0) |
| gallery    | flite TTS (voice slt, female): "Excuse me, do you know where the gallery on River Road is?"     | flite voices BSD-like (CMU); text af2 |
| clarinet   | a clarinet phrase in F# major at 100 bpm, rendered by FluidSynth with FluidR3_GM | generated for af2; soundfont MIT |
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CLIPS = {"directions": "directions.flac", "gallery": "gallery.flac", "clarinet": "clarinet.flac"}


def clip(name: str) -> Path:
    """The path of a shipped example clip (``directions``, ``gallery`` or ``clarinet``)."""
    if name not in CLIPS:
        raise KeyError(f"no example clip {name!r}; choose from {', '.join(CLIPS)}")
    return Path(str(resources.files("af2") / "examples" / CLIPS[name]))
