"""`finetune`: its arguments, and the report it prints."""

import argparse

from .plan import REPLACE_OUTPUT


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    tune = sub.add_parser("finetune", help="train the HQ parameters of a checkpoint on labelled images")
    tune.add_argument("--config", required=True, help="fine-tuning YAML (see configs/finetune_example.yaml)")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config key, e.g. --set training.steps=200 (repeatable)")
    tune.add_argument("--relative-to", default=None, metavar="DIR",
                      help="resolve the config's relative local paths against DIR (default: the working directory)")
    tune.add_argument(REPLACE_OUTPUT, action="store_true",
                      help="replace an earlier fine-tuning run's checkpoint at model.output (its config.json, "
                           "model.safetensors and finetune_report.md; nothing else)")
    tune.set_defaults(fn=cmd_finetune)


def cmd_finetune(args: argparse.Namespace) -> int:
    from ..config import FinetuneConfig
    from .run import finetune

    config = FinetuneConfig.load(args.config, args.set)
    print(finetune(config, log=lambda message: print(message, flush=True), relative_to=args.relative_to,
                   replace_output=args.replace_output))
    return 0
