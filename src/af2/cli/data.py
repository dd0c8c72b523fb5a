"""``af2 data check`` and ``af2 corpus build``: parse, validate, call one library function."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect and validate training data")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    check = data_sub.add_parser("check", help="validate AF2 manifests (.json or .jsonl)")
    check.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST")
    check.add_argument("--data-root", type=Path, default=None,
                       help="audio root (default: the corpus root two levels above each manifest folder)")
    check.add_argument("--tolerance", type=float, default=0.5, help="allowed duration mismatch in seconds")
    check.add_argument("--examples", type=int, default=3, help="examples printed per problem kind")
    check.add_argument("--strict-giveaways", action="store_true",
                       help="exit 1 when a multiple-choice template gives its answer away in the text")
    check.add_argument("--allow-outside-root", action="store_true",
                       help="open audio paths that resolve outside --data-root (refused and counted by default)")
    check.set_defaults(func=_check)

    base = data_sub.add_parser("giveaway-baseline",
                               help="score text-only pickers (longest option, word overlap, odd format, answer prior)"
                                    " on multiple-choice items against chance")
    base.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST")
    base.add_argument("--prior-from", nargs="*", type=Path, default=(), metavar="MANIFEST",
                      help="learn the answer prior from these (the training split); default: the items themselves")
    base.add_argument("--by-template", action="store_true", help="also one line per template")
    base.set_defaults(func=_baseline)

    qa = data_sub.add_parser("qa", help="generate QA pairs from clip metadata (templates or an LLM)")
    qa.add_argument("metadata", type=Path, help="clip metadata JSONL (e.g. <corpus>/metadata/clips.jsonl)")
    qa.add_argument("--out", type=Path, required=True, help="manifest to write (.json or .jsonl)")
    qa.add_argument("--backend", choices=("templates", "llm"), default="templates")
    qa.add_argument("--seed", type=int, default=0)
    qa.add_argument("--task", default="AF2Corpus-AudioSkills", help="flamingo_task of the manifest")
    qa.add_argument("--split-path", default="audio")
    qa.add_argument("--name-format", default="clips/{id}.flac", help="audio name of an item from its metadata")
    qa.add_argument("--llm-base-url", default=None, help="OpenAI-compatible base URL (or AF2_LLM_BASE_URL)")
    qa.add_argument("--llm-model", default=None, help="model name (or AF2_LLM_MODEL)")
    qa.add_argument("--llm-api-key", default=None, help="API key (or AF2_LLM_API_KEY)")
    qa.add_argument("--concurrency", type=int, default=4)
    qa.add_argument("--max-attempts", type=int, default=4)
    qa.add_argument("--timeout", type=float, default=60.0)
    qa.add_argument("--cache-dir", type=Path, default=Path(".af2-llm-cache"))
    qa.set_defaults(func=_qa)

    _register_corpus(subparsers)


def _register_corpus(subparsers) -> None:
    corpus = subparsers.add_parser("corpus", help="build the offline training corpus")
    corpus_sub = corpus.add_subparsers(dest="corpus_command", required=True, metavar="SUBCOMMAND")
    build = corpus_sub.add_parser("build", help="render, compose and annotate the corpus into --out")
    build.add_argument("--out", type=Path, required=True, help="output folder (the data root); keep it outside the repo")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--sources", default=None,
                       help="comma-separated source names (default: all but the optional ones, i.e. music21)")
    build.add_argument("--music21", action="store_true", help="add the music21 source (slow: seconds per score)")
    build.add_argument("--limit", type=int, default=None, help="at most N items per source")
    build.add_argument("--scenes", type=int, default=1000, help="number of short multi-event scenes")
    build.add_argument("--long", type=int, default=240, help="composed long recordings in the train split")
    build.add_argument("--long-val", type=int, default=80,
                       help="composed long recordings in the held-out split (made of held-out clips only)")
    build.add_argument("--val-fraction", type=float, default=0.1,
                       help="share of source clips held out (val); their scenes and long recordings too")
    build.add_argument("--train-answer-slack", type=float, default=3.0,
                       help="train MC items: no answer of a template correct more than this times as often as its "
                            "rarest (val is always exactly balanced)")
    build.add_argument("--long-seconds", type=float, nargs=2, default=(60.0, 300.0), metavar=("MIN", "MAX"))
    build.add_argument("--small-soundfont", action="store_true", help="render MIDI with the 6 MB TimGM6mb soundfont")
    build.add_argument("--workers", type=int, default=2, help="FluidSynth renders run at once")
    build.add_argument("--no-progress", action="store_true")
    build.set_defaults(func=_build)


def _default_root(manifest: Path) -> Path:
    # <root>/manifests/<Task>/<split>.json -> <root>
    parents = manifest.resolve().parents
    return parents[2] if len(parents) > 2 and parents[1].name == "manifests" else manifest.resolve().parent


def _check(args: argparse.Namespace) -> int:
    from af2.data.check import check_manifests
    from af2.data.giveaway import format_report, giveaway_report

    root = args.data_root or _default_root(args.manifests[0])
    report = check_manifests(args.manifests, root, args.tolerance, allow_outside_root=args.allow_outside_root)
    print(report.format(args.examples))
    giveaways = giveaway_report(_items(args.manifests), args.examples)
    print(format_report(giveaways, args.examples))
    gave_away = any(s.giveaways() for s in giveaways.values())
    return 0 if report.ok and not (args.strict_giveaways and gave_away) else 1


def _items(paths):
    from af2.data.manifest import ManifestError, read_manifest

    for path in paths:
        try:
            yield from read_manifest(path).items
        except (ManifestError, OSError, ValueError):
            continue  # the manifest check above already reported it


def _baseline(args: argparse.Namespace) -> int:
    from collections import defaultdict

    from af2.data.giveaway import heuristic_baseline, parse_mc

    items = [mc for mc in map(parse_mc, _items(args.manifests)) if mc is not None]
    prior = [mc for mc in map(parse_mc, _items(args.prior_from)) if mc is not None]
    if not items:
        print("no multiple-choice items found", file=sys.stderr)
        return 1
    groups = {"ALL": items}
    if args.by_template:
        by: dict[str, list] = defaultdict(list)
        for mc in items:
            by[mc.template].append(mc)
        groups.update(sorted(by.items()))
    names = None
    for group, mcs in groups.items():
        scores = heuristic_baseline(mcs, prior)
        if names is None:
            names = list(scores)
            print(f"{'template':40s} {'items':>6s} " + " ".join(f"{n:>16s}" for n in names))
        print(f"{group:40s} {len(mcs):6d} " + " ".join(f"{scores[n]['accuracy'] * 100:15.1f}%" for n in names))
    return 0


def _qa(args: argparse.Namespace) -> int:
    from af2.data.manifest import ManifestItem, write_manifest
    from af2.errors import ManifestError
    from af2.jsonl import read_jsonl
    from af2.data.qa.templates import build_pools, template_qa

    metas = [m for _, m in read_jsonl(args.metadata, error=ManifestError).records]
    bad = next((n for n, m in enumerate(metas, 1) if not isinstance(m, dict) or "id" not in m), None)
    if bad is not None:
        raise ManifestError(f"{args.metadata}: record {bad} is not an object with an 'id'")
    if args.backend == "templates":
        pools = build_pools(metas)
        per_item = [template_qa(m, pools, args.seed) for m in metas]
    else:
        from af2.data.qa.llm import LLMConfig, LLMGenerator

        cfg = LLMConfig.from_env(base_url=args.llm_base_url, model=args.llm_model, api_key=args.llm_api_key,
                                 concurrency=args.concurrency, max_attempts=args.max_attempts, timeout_s=args.timeout,
                                 cache_dir=args.cache_dir)
        gen = LLMGenerator(cfg)
        per_item = [list(r.pairs) for r in gen.generate(metas)]
        s = gen.stats
        print(f"llm: {s.accepted_items} items accepted, {s.failed_items} failed after {cfg.max_attempts} attempts, "
              f"{s.requests} requests, {s.retries} retries, {s.cache_hits} cache hits; "
              f"rejected replies: {dict(s.rejected) or 'none'}", file=sys.stderr)
    items = [ManifestItem(id=f"{args.task}/{m['id']}/{q.template}/{k}", name=args.name_format.format(**m),
                          prompt=q.question, output=q.answer, duration=m["duration"],
                          extra={"skill": q.skill, "provenance": q.provenance()})
             for m, qas in zip(metas, per_item) for k, q in enumerate(qas)]
    write_manifest(args.out, items, split=args.out.stem, split_path=args.split_path, flamingo_task=args.task)
    print(f"wrote {len(items)} QA pairs from {len(metas)} items to {args.out}", file=sys.stderr)
    return 0


def _build(args: argparse.Namespace) -> int:
    from af2.errors import RequestError
    from af2.data.catalog import DEFAULT_SOURCES
    from af2.data.corpus import BuildOptions, build_corpus
    from af2.data.sources import ReservedSourceError, SourceUnavailableError

    names = tuple(s.strip() for s in args.sources.split(",") if s.strip()) if args.sources else DEFAULT_SOURCES
    if args.music21 and "music21" not in names:
        names += ("music21",)
    opts = BuildOptions(out=args.out, seed=args.seed, sources=names, limit=args.limit, scenes=args.scenes,
                        long=args.long, long_val=args.long_val, val_fraction=args.val_fraction,
                        train_answer_slack=args.train_answer_slack, workers=args.workers,
                        long_seconds=tuple(args.long_seconds), small_soundfont=args.small_soundfont,
                        progress=not args.no_progress)
    t0 = time.time()
    try:
        sheet = build_corpus(opts)
    except (ReservedSourceError, SourceUnavailableError) as exc:
        raise RequestError(str(exc)) from exc
    print(f"corpus written to {args.out} in {time.time() - t0:.0f} s: {sheet['clips']['count']} clips, "
          f"{sheet['scenes']['count']} scenes, {sheet['long']['composed']} composed long recordings "
          f"({sheet['long']['composed_1_to_5_min']} of 1-5 min), {sheet['long']['real']} real, "
          f"{sheet['qa']['total']} QA pairs; see {args.out / 'datasheet.md'}", file=sys.stderr)
    return 0
