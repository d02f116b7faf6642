"""Command line: ``python -m imginav_core train CONFIG [--set key=value ...]`` and
``python -m imginav_core synthetic OUT_DIR --samples N --resolution R``."""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load_config, parse_yaml
from .data.cache import LayoutReadError
from .data.manifest import ManifestError
from .data.synthetic import generate_layouts


def parse_overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. training.epochs=2")
        overrides[key.strip()] = parse_yaml(value, f"--set {pair!r}") if value.strip() else ""
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imginav_core")
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train (or resume) one experiment")
    p_train.add_argument("config")
    p_train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config key, e.g. --set training.epochs=2 (repeatable)")
    p_synth = sub.add_parser("synthetic", help="write the synthetic layout set")
    p_synth.add_argument("out_dir")
    p_synth.add_argument("--samples", type=int, default=200)
    p_synth.add_argument("--resolution", type=int, default=512)
    p_synth.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # Errors that say what to fix: a message, not a traceback, in the job's log.
    stops: tuple[type[Exception], ...] = (ConfigError, ManifestError, LayoutReadError)
    if args.command == "train":  # imported here: the synthetic command needs no torch
        from .train import STOPS, train

        stops = STOPS
    try:
        if args.command == "train":
            train(load_config(args.config, parse_overrides(args.set)))
        else:
            print(generate_layouts(args.out_dir, args.samples, args.resolution, args.seed))
    except stops as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
