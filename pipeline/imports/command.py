"""`import`: reviewed annotations back in, as the labelled Parquet that `finetune` reads: a Label
Studio JSON export (`label_studio`) or a COCO instances file (`coco`), with whether a person
changed each annotation from the prediction it started from (`matching`), into one new Parquet
file (`labelled`)."""

import argparse
from typing import TYPE_CHECKING, Any

from ..output.arguments import add_storage_arguments, storage_of

if TYPE_CHECKING:
    from ..storage import Location

IMPORT_FORMATS = ("label-studio", "coco")


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    imp = sub.add_parser(
        "import", help="turn reviewed annotations (a Label Studio JSON export or a COCO file) into the labelled Parquet "
                       "that finetune reads",
        description="Writes one new Parquet file, a row per image: id, image_uri (an absolute path or URI), boxes "
                    "(xyxy pixels, a list per row), masks (COCO RLE per box), categories (the name per box) and "
                    "changed (per box: whether a person changed it from the prediction it started from; true for "
                    "one added; null without predictions to compare with). Prints what it read, compared and "
                    "skipped, by reason, and the finetune config keys that read the file.")
    imp.add_argument("--format", required=True, choices=IMPORT_FORMATS,
                     help="label-studio: Label Studio's JSON export of the project (Export -> JSON), brush and "
                          "polygon regions of each task's latest submitted annotation; coco: a COCO instances file, "
                          "polygon or RLE segmentations")
    imp.add_argument("--input", required=True, metavar="EXPORT", help="the export to read (a path or fsspec URL)")
    imp.add_argument("--output", required=True, metavar="LABELLED",
                     help="the new .parquet file to write (a path or fsspec URL); an existing file is never replaced")
    imp.add_argument("--label-studio-root", default=None, metavar="DIR",
                     help="label-studio: Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, which its "
                          "/data/local-files/?d=<path> image URLs are read against (as export --label-studio-root "
                          "wrote them)")
    imp.add_argument("--images-root", default=None, metavar="DIR",
                     help="coco: the directory relative file_names are read against (as export --images-root wrote "
                          "them; default: the COCO file's directory)")
    imp.add_argument("--predictions", default=None, metavar="COCO_JSON",
                     help="coco: the COCO file the reviewers started from (e.g. our export), to tell which "
                          "annotations a person changed: images matched by id, annotations by id, else by mask IoU")
    add_storage_arguments(imp)
    imp.set_defaults(fn=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    import os

    import yaml

    from ..inputs.images import input_directory
    from ..storage import Location, is_local, plain_path
    from ..text import plural
    from .image_paths import ImageLocator
    from .labelled import check_new_output, finetune_keys, write_labelled

    if args.format == "label-studio" and (args.images_root or args.predictions):
        raise ValueError("--images-root and --predictions apply to --format coco; a Label Studio export holds its "
                         "predictions, and its local images are read against --label-studio-root")
    if args.format == "coco" and args.label_studio_root:
        raise ValueError("--label-studio-root applies to --format label-studio; COCO file_names are read against "
                         "--images-root")
    if args.label_studio_root and not (is_local(args.label_studio_root)
                                       and os.path.isdir(plain_path(args.label_studio_root))):
        raise ValueError(f"--label-studio-root {args.label_studio_root}: not a local directory")
    storage = storage_of(args)
    output = Location(args.output, storage)
    check_new_output(output)
    source = Location(args.input, storage)
    export = _read_json(source, "--input")
    if args.format == "label-studio":
        from .label_studio import read_label_studio

        images = ImageLocator(input_directory(source), args.label_studio_root)
        rows, counts = read_label_studio(export, images, f"--input {args.input}")
        advice = ("give --label-studio-root (Label Studio's document root) for /data/local-files/ URLs, and make sure "
                  "the other paths are files on this machine")
    else:
        from .coco import read_coco

        predictions = _read_json(Location(args.predictions, storage), "--predictions") if args.predictions else None
        images = ImageLocator(args.images_root or input_directory(source))
        rows, counts = read_coco(export, images, f"--input {args.input}", predictions, f"--predictions {args.predictions}")
        advice = "give --images-root, the directory the file_names are relative to (default: the COCO file's)"
    for line in counts.lines():
        print(line)
    problem = images.problem(advice)
    if problem is not None:
        raise ValueError(problem)
    if not rows:
        raise ValueError(f"none of the {counts.read} {counts.source}s has a usable annotation (counted above), so "
                         "nothing was written")
    for note in write_labelled(rows, output):
        print(f"note: {note}")
    print(f"wrote {args.output}: {plural(counts.rows, 'row')}, {plural(counts.imported, 'mask')}")
    print("fine-tune on it with these keys in the finetune config (python -m pipeline finetune --config ...):")
    print(yaml.safe_dump({"data": finetune_keys(output, rows)}, sort_keys=False, allow_unicode=True), end="")
    return 0


def _read_json(location: "Location", flag: str) -> Any:
    import json

    try:
        with location.open("rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{flag} {location.url}: not found") from None
    except IsADirectoryError:
        raise ValueError(f"{flag} {location.url} is a directory: give the export's JSON file") from None
    except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{flag} {location.url} is not JSON ({e}): give the JSON file the tool exported") from None
