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
    correct = sub.add_parser(
        "demo-correct", help="stand in for a reviewer of the demo's Label Studio tasks: redraw every mask exactly "
                             "and write the result as Label Studio's JSON export")
    correct.add_argument("--tasks", required=True, help="the tasks `export --format label-studio` wrote for a demo job")
    correct.add_argument("--ground-truth", required=True,
                         help="the demo's exact masks (demo_output/ground_truth/masks.parquet)")
    correct.add_argument("--output", required=True, help="the reviewed project's export to write (JSON)")
    correct.set_defaults(fn=cmd_demo_correct)


def cmd_demo(args: argparse.Namespace) -> int:
    from .run import run_demo

    return run_demo(args.workdir, num_images=args.num_images, checkpoint=args.checkpoint)


def cmd_demo_correct(args: argparse.Namespace) -> int:
    from .reviewer import write_corrected

    counts = write_corrected(args.tasks, args.ground_truth, args.output)
    print(f"reviewed {counts['tasks']} tasks: {counts['redrawn']} masks redrawn, {counts['kept']} kept as predicted, "
          f"{counts['added']} added, {counts['no_ground_truth']} tasks without ground truth left unreviewed\n"
          f"export:   {args.output}")
    return 0
