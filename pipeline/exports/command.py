"""`export` (and `export-coco`, its COCO RLE form): a job's masks as COCO (RLE or polygons),
a YOLO segmentation dataset or Label Studio tasks."""

import argparse
import os
import sys
from typing import TYPE_CHECKING

from ..output.arguments import add_output_arguments, named_output

if TYPE_CHECKING:
    from ..output.marks import MarkFilter
    from ..output.results import ResultReader

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
        marked = cmd.add_mutually_exclusive_group()
        marked.add_argument("--exclude", default=None, metavar="MARKS",
                            help="leave out the masks this review marks file (the review page's download, JSON or "
                                 "CSV of id, box, mark) marks bad")
        marked.add_argument("--only", default=None, metavar="MARKS",
                            help="export only the masks this review marks file marks good, and only their images")
        cmd.add_argument("--images-root", default=None, metavar="DIR",
                         help="coco-*, yolo-seg: name the images under this local directory by their path relative "
                              "to it (COCO file_name) and link them relatively (yolo-seg), so that a tool opens them "
                              "wherever DIR is mounted")
        cmd.add_argument("--label-studio-root", default=None, metavar="DIR",
                         help="label-studio: Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT; local images "
                              "under it become /data/local-files/?d=<path under DIR> URLs, which it serves")
        cmd.add_argument("--simplify", type=float, default=0.0, metavar="PIXELS",
                         help="polygon formats: simplify the polygons with this tolerance in pixels (default: 0, "
                              "polygons on the masks' pixel edges, exact)")
        cmd.set_defaults(fn=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ..output.marks import EXCLUDE, ONLY, MarkFilter, read_marks
    from ..output.results import ResultReader, job_columns
    from ..storage import Location
    from .image_refs import ImageSources, NoImageToPointAt, no_image_advice

    if args.simplify and args.format not in ("coco-polygons", "yolo-seg"):
        raise ValueError(f"--simplify applies to the polygon formats (coco-polygons, yolo-seg), not {args.format}")
    if args.images_root and args.format == "label-studio":
        raise ValueError("--images-root applies to coco-rle, coco-polygons and yolo-seg; Label Studio serves local "
                         "images from its document root: --label-studio-root")
    if args.label_studio_root and args.format != "label-studio":
        raise ValueError(f"--label-studio-root applies to label-studio, not {args.format}")
    named = named_output(args)
    columns = job_columns(named.output, named.config, args.id_column, args.category_column, args.image_column)
    if named.config is not None:
        print(f"columns from {named.config_source}: id {columns.id_column!r}, categories {columns.category_column!r}, "
              f"image paths {columns.image_column!r}")
    marks = None
    if args.exclude or args.only:
        marks = MarkFilter(read_marks(Location(args.exclude or args.only, named.output.location.storage)),
                           EXCLUDE if args.exclude else ONLY)
        if not marks.listed:
            found = f"{len(marks.marks.good)} good, {len(marks.marks.bad)} bad"
            if marks.mode == ONLY:
                raise ValueError(f"--only {args.only}: the file marks no mask good ({found}), so nothing would be "
                                 "exported; --exclude leaves out the masks marked bad")
            print(f"warning: --exclude {args.exclude}: the file marks no mask bad ({found}); every mask is exported",
                  file=sys.stderr)
    reader = ResultReader(named.output, columns, min_score=args.min_score, min_stability=args.min_stability,
                          marks=marks)
    destination = Location(args.output, named.output.location.storage)
    written = args.output
    # The job's image sources (its input directory: a look at the input's store) only where
    # an export points at images by them.
    root = args.images_root or args.label_studio_root
    try:
        if args.format in ("coco-rle", "coco-polygons"):
            from .coco import write_coco

            counts = write_coco(reader, destination, as_polygons=args.format == "coco-polygons", simplify=args.simplify,
                                images_root=ImageSources.of_job(named.config, root) if root else None)
        elif args.format == "yolo-seg":
            from .yolo import write_yolo_seg

            counts = write_yolo_seg(reader, args.output, simplify=args.simplify,
                                    images=ImageSources.of_job(named.config, root))
        else:
            from .label_studio import labeling_config_path, write_label_studio

            checkpoint = named.config.model.checkpoint if named.config is not None else None
            model_version = os.path.basename(checkpoint.rstrip("/")) if checkpoint else "samhq-annotate"
            counts = write_label_studio(reader, destination, model_version=model_version,
                                        images=ImageSources.of_job(named.config, root))
            written = f"{args.output} and {labeling_config_path(args.output)}"
    except NoImageToPointAt as e:
        raise ValueError(f"{e}: {no_image_advice(named.output, named.config, columns.image_column)}") from None
    print(f"wrote {written}: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    if marks is not None:
        _report_marks(marks, reader)
    return 0


def _report_marks(marks: "MarkFilter", reader: "ResultReader") -> None:
    """What the marks did, and the listed masks they did not find (a file of another job?)."""
    from ..output.marks import EXCLUDE

    if marks.mode == EXCLUDE:
        print(f"marks {marks.marks.source}: {reader.marked_out_boxes} masks marked bad left out")
    else:
        print(f"marks {marks.marks.source}: only the {reader.num_masks} masks marked good, {reader.unmarked_images} "
              f"images without one left out, {reader.marked_out_boxes} unmarked masks of the others left out")
    unmet = marks.unmet()
    if unmet:
        named = ", ".join(f"id {row_id!r} box {box}" for row_id, box in unmet[:3])
        print(f"warning: {len(unmet)} of the {len(marks.listed)} masks the marks file lists are not among these "
              f"results' exported masks ({named}{', ...' if len(unmet) > 3 else ''}): marks of another job, or of "
              "rows that failed", file=sys.stderr)
