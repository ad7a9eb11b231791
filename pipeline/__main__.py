"""Command line: `python -m pipeline {run,validate,export,export-coco,evaluate,review,finetune,schema,demo} ...`
(also installed as `samhq-annotate`)."""

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Type

from .config import ConfigError, StorageConfig, load_config

if TYPE_CHECKING:
    from .preflight import JobPlan

log = logging.getLogger("pipeline")


def _plan(args: argparse.Namespace) -> "JobPlan":
    from .preflight import plan_job

    return plan_job(load_config(args.config, args.set), relative_to=args.relative_to, retry_errors=args.retry_errors)


def cmd_validate(args: argparse.Namespace) -> int:
    import ray

    from .job import describe_model, plural
    from .preflight import check_resources, cluster_resources, local_resources
    from .stages import decode_memory

    plan = _plan(args)
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if os.environ.get("RAY_ADDRESS"):
        from .cluster import quiet_ray_logging

        quiet_ray_logging(verbose=False)
        ray.init(logging_level=logging.WARNING)  # the cluster in RAY_ADDRESS
        resources = cluster_resources()
    else:
        resources = local_resources()
    compute, inputs = plan.config.compute, plan.config.input
    problems = check_resources(plan.config, resources, decode_memory(compute.decode_batch_size, inputs.max_image_pixels),
                               checkpoint_filter=plan.resume.filters_rows)
    if problems:
        raise ConfigError(problems)
    retry = (f"; --retry-errors: {plural(len(plan.retry.ids), 'row')} with transient errors to run again"
             if plan.retry is not None else "")
    print(f"config OK: {args.config}: {plural(plan.scan.num_rows, 'row')} in "
          f"{plural(len(plan.scan.files), 'file')}, model "
          f"{describe_model(plan.model_config)}, output {plan.config.output.path}; fits {resources.describe()}{retry}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .cluster import connect
    from .job import JobFailed, run_job

    plan = _plan(args)
    stderr = connect(verbose=args.verbose)
    try:
        summary = run_job(plan.config, plan, verbose=args.verbose, progress_interval=args.progress_interval)
    except JobFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        stderr.stop()
    if args.verbose:
        print(summary.stats)
    print(f"job summary: {summary.render()}")
    print(f"results: {plan.config.output.path}")
    if summary.closing is not None and not summary.closing.passed:
        print(f"error: the results at {plan.config.output.path} failed the closing check (see above); no "
              "_SUCCESS manifest was written", file=sys.stderr)
        return 1
    return 0


EXPORT_FORMATS = ("coco-rle", "coco-polygons", "yolo-seg", "label-studio")


def cmd_export(args: argparse.Namespace) -> int:
    from .coco import write_coco
    from .label_studio import labeling_config_path, write_label_studio
    from .results import ResultReader, job_columns
    from .yolo import write_yolo_seg

    if args.simplify and args.format not in ("coco-polygons", "yolo-seg"):
        raise ValueError(f"--simplify applies to the polygon formats (coco-polygons, yolo-seg), not {args.format}")
    job, storage, source = _job_of(args)
    columns = job_columns(args.input, storage, job or {}, args.id_column, args.category_column, args.image_column)
    if job:
        print(f"columns from {source}: id {columns.id_column!r}, categories {columns.category_column!r}, "
              f"image paths {columns.image_column!r}")
    _warn_if_unfinished(args.input, storage)
    reader = ResultReader(args.input, columns, storage, min_score=args.min_score, min_stability=args.min_stability)
    written = args.output
    if args.format in ("coco-rle", "coco-polygons"):
        counts = write_coco(reader, args.output, storage, as_polygons=args.format == "coco-polygons",
                            simplify=args.simplify)
    elif args.format == "yolo-seg":
        counts = write_yolo_seg(reader, args.output, simplify=args.simplify)
    else:
        checkpoint = ((job or {}).get("model") or {}).get("checkpoint")
        model_version = os.path.basename(checkpoint.rstrip("/")) if checkpoint else "samhq-annotate"
        counts = write_label_studio(reader, args.output, storage, model_version=model_version)
        written = f"{args.output} and {labeling_config_path(args.output)}"
    print(f"wrote {written}: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


def _job_of(args: argparse.Namespace) -> Tuple[Optional[Dict[str, Any]], StorageConfig, str]:
    """The config (as a dict) of the job whose output is `args.input`, its storage settings and
    where the config came from: `--config`, else the _samhq_job.json next to the results
    (None when there is none)."""
    from .output_files import JOB_FILE, read_job_description

    if args.config:
        config = load_config(args.config)
        return config.to_dict(), config.storage, args.config
    storage = StorageConfig(endpoint_url=args.endpoint_url, region=args.region)
    description = read_job_description(args.input, storage)
    return description["config"] if description else None, storage, f"{args.input.rstrip('/')}/{JOB_FILE}"


def _add_job_output_arguments(cmd: argparse.ArgumentParser) -> None:
    """The arguments that name a job's output and the job's columns and storage."""
    cmd.add_argument("--input", required=True, help="the job's output Parquet (file, directory or glob)")
    cmd.add_argument("--config", default=None,
                     help="the job's YAML, for its columns and storage (default: the _samhq_job.json the job wrote "
                          "next to its results)")
    cmd.add_argument("--id-column", default=None, help="the job's input.id_column (default: from the job)")
    cmd.add_argument("--category-column", default=None, help="the job's input.category_column (default: from the job)")
    cmd.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint, as storage.endpoint_url")
    cmd.add_argument("--region", default=None)


def _warn_if_unfinished(output: str, storage: Any) -> None:
    """A warning on stderr when `output` is a job's output without its _SUCCESS manifest."""
    from .output_files import result_files

    try:
        warning = result_files(output, storage).warning
    except FileNotFoundError:
        return  # the reader itself says what is missing
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def cmd_review(args: argparse.Namespace) -> int:
    from .review import write_review

    job, storage, _ = _job_of(args)
    _warn_if_unfinished(args.input, storage)
    summary = write_review(args.input, args.out, images=args.images, storage=storage, job=job, id_column=args.id_column,
                           category_column=args.category_column, image_column=args.image_column,
                           max_images=args.max_images,
                           needs_review=args.max_images // 4 if args.needs_review is None else args.needs_review,
                           seed=args.seed, side=args.thumbnail_side)
    totals = summary.totals
    unreadable = f", {summary.unreadable} of them unreadable (shown with their error)" if summary.unreadable else ""
    print(f"wrote {summary.page}: {summary.shown} of {totals['images']} images{unreadable}; {totals['num_masks']} masks, "
          f"{totals['rows']} rows, {sum(totals['failed_rows'].values())} failed")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_masks, write_report

    if (args.overlays_dir is None) != (args.images is None):
        print("error: --overlays-dir and --images go together (the overlays are drawn on the images)", file=sys.stderr)
        return 2
    storage = StorageConfig(endpoint_url=args.endpoint_url, region=args.region)
    _warn_if_unfinished(args.predictions, storage)
    result = evaluate_masks(args.predictions, args.ground_truth, id_column=args.id_column,
                            category_column=args.category_column, worst=args.worst, overlays_dir=args.overlays_dir,
                            images=args.images, image_column=args.image_column, storage=storage,
                            num_partitions=args.partitions)
    print(result.metrics_table())
    if args.report:
        write_report(result, args.report, storage)
        print(f"wrote {args.report}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from .config import read_yaml
    from .finetune import finetune, parse_finetune_config

    config = parse_finetune_config(read_yaml(args.config, args.set))
    print(finetune(config, log=lambda message: print(message, flush=True), relative_to=args.relative_to))
    return 0


def config_schema(kind: str) -> str:
    """The JSON Schema of a job ("job") or fine-tuning ("finetune") config, as committed in
    configs/<kind>.schema.json for editors."""
    import json

    from .config import JobConfig, Sections
    from .finetune import FinetuneConfig

    models: Dict[str, Type[Sections]] = {"job": JobConfig, "finetune": FinetuneConfig}
    return json.dumps(models[kind].model_json_schema(), indent=2, sort_keys=True) + "\n"


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(config_schema(args.kind))
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
        cmd.add_argument("--relative-to", default=None, metavar="DIR",
                         help="resolve the config's relative local paths against DIR (default: the working "
                              "directory); under `ray job submit` on this machine: --relative-to \"$PWD\"")
        cmd.add_argument("--retry-errors", action="store_true",
                         help="a second pass over the completed output at output.path: run again only the rows "
                              "whose error is transient (image reads that timed out, 5xx replies, lost connections; "
                              "not corrupt images or bad boxes) and put the new rows in place of the failed ones")
        cmd.set_defaults(fn=fn)
    run_cmd = sub.choices["run"]
    run_cmd.add_argument("--verbose", action="store_true",
                         help="Ray's own logs and progress bars, and Ray Data's per-stage stats at the end")
    run_cmd.add_argument("--progress-interval", type=float, default=10.0, metavar="SECONDS",
                         help="seconds between progress lines (default: 10)")
    export = sub.add_parser("export", help="write a job's masks as COCO (RLE or polygons), YOLO-seg or Label Studio tasks")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                        help="coco-rle: COCO instances JSON with RLE masks; coco-polygons: the same with polygons (RLE "
                             "for masks with holes); yolo-seg: a YOLO segmentation dataset directory (Ultralytics' "
                             "layout); label-studio: Label Studio tasks JSON with brush predictions, and its labeling "
                             "config XML")
    coco = sub.add_parser("export-coco", help="write a COCO instances file from a job's output (export --format coco-rle)")
    coco.set_defaults(format="coco-rle")
    for cmd in (export, coco):
        _add_job_output_arguments(cmd)
        cmd.add_argument("--output", required=True,
                         help="the file to write (a new directory for yolo-seg)")
        cmd.add_argument("--image-column", default=None,
                         help="column of image URIs or paths that the export names the images by (default: the job's "
                              "input.image_uri_column; without one, images are named by their id)")
        cmd.add_argument("--min-score", type=float, default=None,
                         help="leave out masks whose predicted IoU is below this")
        cmd.add_argument("--min-stability", type=float, default=None,
                         help="leave out masks whose stability score is below this")
        cmd.add_argument("--simplify", type=float, default=0.0, metavar="PIXELS",
                         help="polygon formats: simplify the polygons with this tolerance in pixels (default: 0, "
                              "polygons on the masks' pixel edges, exact)")
        cmd.set_defaults(fn=cmd_export)
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
    rev = sub.add_parser("review", help="a static HTML page of a job's masks over its images, lowest scores first")
    _add_job_output_arguments(rev)
    rev.add_argument("--out", required=True, help="local directory for index.html and its pictures")
    rev.add_argument("--images", default=None, help="the job's input Parquet (default: the job's input.path)")
    rev.add_argument("--image-column", default=None,
                     help="its column of encoded images or image URIs (default: the job's)")
    rev.add_argument("--max-images", type=int, default=200, help="images on the page, at most (default: 200)")
    rev.add_argument("--needs-review", type=int, default=None,
                     help="of them, the images with the lowest predicted IoU or stability (default: a quarter)")
    rev.add_argument("--seed", type=int, default=0, help="of the sample of the other images (default: 0)")
    rev.add_argument("--thumbnail-side", type=int, default=512, help="thumbnails' longest side in pixels (default: 512)")
    rev.set_defaults(fn=cmd_review)
    tune = sub.add_parser("finetune", help="train the HQ parameters of a checkpoint on labelled images")
    tune.add_argument("--config", required=True, help="fine-tuning YAML (see configs/finetune_example.yaml)")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config key, e.g. --set training.steps=200 (repeatable)")
    tune.add_argument("--relative-to", default=None, metavar="DIR",
                      help="resolve the config's relative local paths against DIR (default: the working directory)")
    tune.set_defaults(fn=cmd_finetune)
    schema = sub.add_parser("schema", help="print the JSON Schema of the config files (for editors)")
    schema.add_argument("kind", nargs="?", choices=("job", "finetune"), default="job")
    schema.set_defaults(fn=cmd_schema)
    demo = sub.add_parser("demo", help="build a sample dataset and run the whole pipeline locally")
    demo.add_argument("--workdir", default="demo_output", help="where the sample data and results go")
    demo.add_argument("--num-images", type=int, default=8)
    demo.add_argument("--checkpoint", default=None,
                      help="model to run (default: the demo model in the repository's models/samhq-demo-synthetic)")
    demo.set_defaults(fn=cmd_demo)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    if not os.environ.get("RAY_ADDRESS") and "ray" not in sys.modules:
        # The local cluster `run` starts gets token authentication, as Ray 2.60 gives local
        # clusters anyway; said explicitly, before Ray is imported (Ray reads it once, at
        # import), Ray does not warn about it.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        if args.command not in ("export", "export-coco", "evaluate", "review"):
            raise
        print(f"error: {e}", file=sys.stderr)  # their inputs' problems, each named by the message
        return 2


if __name__ == "__main__":
    sys.exit(main())
