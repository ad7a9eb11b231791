"""`demo`: its arguments."""

import argparse

from ..config import DEMO_WORKDIR


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    demo = sub.add_parser("demo", help="build a sample dataset and run the whole pipeline locally")
    demo.add_argument("--workdir", default=DEMO_WORKDIR, help="where the sample data and results go")
    demo.add_argument("--num-images", type=int, default=8)
    demo.add_argument("--checkpoint", default=None,
                      help="model to run (default: the demo model in the repository's models/samhq-demo-synthetic)")
    demo.set_defaults(fn=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from .run import run_demo

    return run_demo(args.workdir, num_images=args.num_images, checkpoint=args.checkpoint)
