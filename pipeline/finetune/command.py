"""`finetune`: its arguments, and the report it prints."""

import argparse
import sys

from .plan import REPLACE_OUTPUT


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    tune = sub.add_parser("finetune", help="train the HQ parameters (or the whole mask decoder) of a checkpoint on "
                                           "labelled images, here or on Ray Train workers")
    tune.add_argument("--config", required=True, help="fine-tuning YAML (see configs/finetune_example.yaml)")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config key, e.g. --set training.steps=200 (repeatable)")
    tune.add_argument("--relative-to", default=None, metavar="DIR",
                      help="resolve the config's relative local paths against DIR (default: the working directory)")
    tune.add_argument(REPLACE_OUTPUT, action="store_true",
                      help="replace an earlier fine-tuning run's checkpoint at model.output (its config.json, "
                           "model.safetensors and finetune_report.md; nothing else), or start an unfinished Ray Train "
                           "run there over (deleting its training checkpoints, _training/)")
    tune.set_defaults(fn=cmd_finetune)


def cmd_finetune(args: argparse.Namespace) -> int:
    from ..config import FinetuneConfig
    from .distributed import FinetuneFailed
    from .run import finetune

    config = FinetuneConfig.load(args.config, args.set)
    try:
        text = finetune(config, log=lambda message: print(message, flush=True), relative_to=args.relative_to,
                        replace_output=args.replace_output)
    except FinetuneFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(text)
    return 0
