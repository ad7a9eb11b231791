"""`export` (and `export-coco`, its COCO RLE form): a job's masks as COCO (RLE or polygons),
a YOLO segmentation dataset or Label Studio tasks."""

import argparse
import os

from ..output.arguments import add_output_arguments, named_output

EXPORT_FORMATS = ("coco-rle", "coco-polygons", "yolo-seg", "label-studio")


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    export = sub.add_parser("export", help="write a job's masks as COCO (RLE or polygons), YOLO-seg or Label Studio tasks")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                        help="coco-rle: COCO instances JSON with RLE masks; coco-polygons: the same with polygons (RLE "
                             "for masks with holes); yolo-seg: a YOLO segmentation dataset directory (Ultralytics' "
                             "layout); label-studio: Label Studio tasks JSON with brush predictions, and its labeling "
                             "config XML")
    coco = sub.add_parser("export-coco", help="write a COCO instances file from a job's output (export --format coco-rle)")
    coco.set_defaults(format="coco-rle")
    for cmd in (export, coco):
        add_output_arguments(cmd)
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


def cmd_export(args: argparse.Namespace) -> int:
    from ..output.results import ResultReader, job_columns
    from ..storage import Location

    if args.simplify and args.format not in ("coco-polygons", "yolo-seg"):
        raise ValueError(f"--simplify applies to the polygon formats (coco-polygons, yolo-seg), not {args.format}")
    named = named_output(args)
    columns = job_columns(named.output, named.config, args.id_column, args.category_column, args.image_column)
    if named.config is not None:
        print(f"columns from {named.config_source}: id {columns.id_column!r}, categories {columns.category_column!r}, "
              f"image paths {columns.image_column!r}")
    reader = ResultReader(named.output, columns, min_score=args.min_score, min_stability=args.min_stability)
    destination = Location(args.output, named.output.location.storage)
    written = args.output
    if args.format in ("coco-rle", "coco-polygons"):
        from .coco import write_coco

        counts = write_coco(reader, destination, as_polygons=args.format == "coco-polygons", simplify=args.simplify)
    elif args.format == "yolo-seg":
        from .yolo import write_yolo_seg

        counts = write_yolo_seg(reader, args.output, simplify=args.simplify)
    else:
        from .label_studio import labeling_config_path, write_label_studio

        checkpoint = named.config.model.checkpoint if named.config is not None else None
        model_version = os.path.basename(checkpoint.rstrip("/")) if checkpoint else "samhq-annotate"
        counts = write_label_studio(reader, destination, model_version=model_version)
        written = f"{args.output} and {labeling_config_path(args.output)}"
    print(f"wrote {written}: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0
