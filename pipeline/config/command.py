"""`schema`: the JSON Schema of the config files, for editors (`configs/*.schema.json`)."""

import argparse
import json
import sys
from typing import Dict, Type

from .base import Sections
from .finetune import FinetuneConfig
from .job import JobConfig


def config_schema(kind: str) -> str:
    """The JSON Schema of a job ("job") or fine-tuning ("finetune") config, as committed in
    configs/<kind>.schema.json for editors."""
    models: Dict[str, Type[Sections]] = {"job": JobConfig, "finetune": FinetuneConfig}
    return json.dumps(models[kind].model_json_schema(), indent=2, sort_keys=True) + "\n"


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    schema = sub.add_parser("schema", help="print the JSON Schema of the config files (for editors)")
    schema.add_argument("kind", nargs="?", choices=("job", "finetune"), default="job")
    schema.set_defaults(fn=cmd_schema)


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(config_schema(args.kind))
    return 0
