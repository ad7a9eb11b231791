"""`evaluate`: its arguments, and the report it prints and writes."""

import argparse
import sys

from ..output.arguments import add_storage_arguments, storage_of, warn_if_unfinished


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    ev = sub.add_parser("evaluate", help="mask quality (mIoU, boundary IoU, COCO AP; segment-everything's AP) of a "
                                         "job's output vs ground truth")
    ev.add_argument("--predictions", required=True, help="the job's output Parquet (file, directory or glob)")
    ev.add_argument("--ground-truth", required=True,
                    help="Parquet with the id column and COCO RLE `masks` aligned with the job's input boxes "
                         "(a row without prompts: the image's objects, for segment-everything's AP)")
    ev.add_argument("--report", default=None, help="write a Markdown report here")
    ev.add_argument("--id-column", default="id", help="the job's input.id_column (default: id)")
    ev.add_argument("--category-column", default=None,
                    help="per-box categories (ground truth's column, else the output's) for a per-category table")
    ev.add_argument("--worst", type=int, default=20, help="list the N lowest-IoU boxes (default: 20)")
    ev.add_argument("--overlays-dir", default=None, help="write a PNG per worst box here (needs --images)")
    ev.add_argument("--images", default=None, help="Parquet with the id column and the images, e.g. the job's input")
    ev.add_argument("--image-column", default="image", help="encoded image bytes (or URIs) in --images")
    ev.add_argument("--partitions", type=int, default=16,
                    help="temporary partitions of the join (memory: about 1/N of the ground truth; default: 16)")
    add_storage_arguments(ev)
    ev.set_defaults(fn=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..output import JobOutput
    from ..storage import Location
    from .evaluate import evaluate_masks
    from .report import write_report

    if (args.overlays_dir is None) != (args.images is None):
        print("error: --overlays-dir and --images go together (the overlays are drawn on the images)", file=sys.stderr)
        return 2
    storage = storage_of(args)
    warn_if_unfinished(JobOutput(args.predictions, storage))
    result = evaluate_masks(args.predictions, args.ground_truth, id_column=args.id_column,
                            category_column=args.category_column, worst=args.worst, overlays_dir=args.overlays_dir,
                            images=args.images, image_column=args.image_column, storage=storage,
                            num_partitions=args.partitions)
    print(result.metrics_table())
    if args.report:
        write_report(result, Location(args.report, storage))
        print(f"wrote {args.report}")
    return 0
