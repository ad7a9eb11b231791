"""Command line: `python -m pipeline {run,validate,export-coco,evaluate,demo} ...`."""

import argparse
import logging
import sys
from typing import List, Optional

from .config import ConfigError, JobConfig, load_config

log = logging.getLogger("pipeline")


def _load_checked(args: argparse.Namespace) -> JobConfig:
    from .storage import check_reachable

    config = load_config(args.config, args.set)
    problems = check_reachable(config)
    if problems:
        raise ConfigError(problems)
    return config


def cmd_validate(args: argparse.Namespace) -> int:
    _load_checked(args)
    print(f"config OK: {args.config} (input and checkpoint reachable)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import ray

    from samhq_core.checkpoint import read_config

    from .job import run_job
    from .storage import storage_options

    config = _load_checked(args)
    model_config = read_config(config.model.checkpoint, config.model.variant,
                               storage_options=storage_options(config.storage))
    ray.init()  # joins the cluster in RAY_ADDRESS (as under `ray job submit`), else starts a local one
    summary = run_job(config, model_config.vision_config.image_size)
    print(summary.stats)
    print(f"job summary: {summary.render()}")
    print(f"results: {config.output.path}")
    return 0


def cmd_export_coco(args: argparse.Namespace) -> int:
    from .coco import export_coco
    from .config import StorageConfig

    storage = StorageConfig(endpoint_url=args.endpoint_url, region=args.region)
    counts = export_coco(args.input, args.output, id_column=args.id_column, category_column=args.category_column,
                         storage=storage)
    print(f"wrote {args.output}: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .config import StorageConfig
    from .evaluate import evaluate_masks, write_report

    if (args.overlays_dir is None) != (args.images is None):
        print("error: --overlays-dir and --images go together (the overlays are drawn on the images)", file=sys.stderr)
        return 2
    storage = StorageConfig(endpoint_url=args.endpoint_url, region=args.region)
    result = evaluate_masks(args.predictions, args.ground_truth, id_column=args.id_column,
                            category_column=args.category_column, worst=args.worst, overlays_dir=args.overlays_dir,
                            images=args.images, image_column=args.image_column, storage=storage,
                            num_partitions=args.partitions)
    print(result.metrics_table())
    if args.report:
        write_report(result, args.report, storage)
        print(f"wrote {args.report}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.workdir, num_images=args.num_images, checkpoint=args.checkpoint)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description="SAM-HQ box-to-mask annotation on Ray Data")
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn, help_text in (("run", cmd_run, "run a job"), ("validate", cmd_validate, "check a config, run nothing")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", required=True, help="job YAML (see configs/)")
        cmd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config key, e.g. --set compute.num_actors=4 (repeatable)")
        cmd.set_defaults(fn=fn)
    coco = sub.add_parser("export-coco", help="write a COCO instances file from a job's output")
    coco.add_argument("--input", required=True, help="the job's output Parquet (file, directory or glob)")
    coco.add_argument("--output", required=True, help="instances JSON path")
    coco.add_argument("--id-column", default="id", help="the job's input.id_column (default: id)")
    coco.add_argument("--category-column", default=None, help="the job's input.category_column, if any")
    coco.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint, as storage.endpoint_url")
    coco.add_argument("--region", default=None)
    coco.set_defaults(fn=cmd_export_coco)
    ev = sub.add_parser("evaluate", help="mask quality (mIoU, boundary IoU, COCO AP) of a job's output vs ground truth")
    ev.add_argument("--predictions", required=True, help="the job's output Parquet (file, directory or glob)")
    ev.add_argument("--ground-truth", required=True,
                    help="Parquet with the id column and COCO RLE `masks` aligned with the job's input boxes")
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
    ev.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint, as storage.endpoint_url")
    ev.add_argument("--region", default=None)
    ev.set_defaults(fn=cmd_evaluate)
    demo = sub.add_parser("demo", help="build a sample dataset and run the whole pipeline locally")
    demo.add_argument("--workdir", default="demo_output", help="where the sample data and results go")
    demo.add_argument("--num-images", type=int, default=8)
    demo.add_argument("--checkpoint", default=None,
                      help="model to run (default: the demo model in the repository's models/samhq-demo-synthetic)")
    demo.set_defaults(fn=cmd_demo)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
