"""How exactly Ultralytics gets the YOLO-seg export's masks back: masks written as the export
writes them (`pipeline.exports.yolo.label_line` of `pipeline.masks.polygons.fillpoly_polygon`),
read by Ultralytics' own `YOLODataset` (label parsing and checks, resampling of each polygon)
and drawn at the image's size by its own `polygon2mask` (`cv2.fillPoly`), compared with the
masks by IoU.

Two steps in two virtual environments, since Ultralytics needs a torchvision that does not
import beside the project's torch (`bash bench/ultralytics_fidelity.sh` runs both):

    python -m bench.ultralytics_fidelity write DIR [--results demo_output/output]
        (the project's environment) a YOLO-seg dataset per mask source under DIR, each image a
        blank PNG of the mask's size (Ultralytics checks it), with the masks and their kinds
    ULTRALYTICS_PYTHON -m bench.ultralytics_fidelity measure DIR --out bench/results/...
        (Ultralytics' environment: of the project it imports only bench.common.machine) the masks
        Ultralytics draws of those labels, against the written masks

Mask sources: the exact masks of synthetic scenes (`samhq_core.training.synthetic`), several
masks per image as an export writes them (Ultralytics resamples all of an image's polygons to
one length), and, with --results, a job's output masks (e.g. the demo's).
"""

import argparse
import copy
import json
import os
import sys
from collections import defaultdict
from typing import Any, Dict, List, Optional, cast

import numpy as np

from bench.common.machine import machine_at_end

MASKS, KINDS = "masks.npz", "kinds.json"


def write(directory: str, scenes: int, side: int, seed: int, results: Optional[str]) -> None:
    """The datasets to measure, under `directory`/<source>/{images,labels}."""
    from PIL import Image

    from pipeline.exports.yolo import label_line
    from pipeline.masks import polygons

    sources = {"synthetic": _synthetic(scenes, side, seed)}
    if results:
        sources["job output"] = _job_output(results)
    for source, images in sources.items():
        root = os.path.join(directory, source.replace(" ", "_"))
        os.makedirs(os.path.join(root, "images"), exist_ok=True)
        os.makedirs(os.path.join(root, "labels"), exist_ok=True)
        arrays: Dict[str, np.ndarray] = {}
        kinds: Dict[str, List[Dict[str, Any]]] = {}
        for index, (masks, names) in enumerate(images):
            stem = f"{index:05d}"
            height, width = masks[0].shape
            Image.new("L", (width, height)).save(os.path.join(root, "images", stem + ".png"))
            with open(os.path.join(root, "labels", stem + ".txt"), "w") as f:
                for mask in masks:
                    f.write(label_line(0, polygons.fillpoly_polygon(mask), height, width) + "\n")
            arrays[stem] = np.packbits(np.stack(masks), axis=-1)
            kinds[stem] = [{"kind": name, "width": width,
                            "parts": len(parts := polygons.components(mask)),
                            "holes": sum(len(part.holes) for part in parts)} for mask, name in zip(masks, names, strict=True)]
        np.savez_compressed(os.path.join(root, MASKS), **cast(Dict[str, Any], arrays))
        with open(os.path.join(root, KINDS), "w") as f:
            json.dump({"source": source, "masks": kinds}, f)
        print(f"{source}: {len(arrays)} images, {sum(map(len, kinds.values()))} masks in {root}", flush=True)


def _synthetic(scenes: int, side: int, seed: int):
    from samhq_core.training.synthetic import make_scene

    rng = np.random.default_rng(seed)
    for _ in range(scenes):
        scene = make_scene(rng, side, side)
        yield list(scene.masks), list(scene.kinds)


def _job_output(path: str):
    from pipeline.masks import rle
    from pipeline.output import JobOutput
    from pipeline.output.results import ResultReader, job_columns

    output = JobOutput(path)
    reader = ResultReader(output, job_columns(output))
    for image in reader.images():
        names = {c["id"]: c["name"] for c in reader.categories()}
        decoded = [(rle.decode(m.rle, image.file_name, f"mask {m.box_index}").astype(bool), names[m.category_id])
                   for m in image.masks]
        kept = [(mask, name) for mask, name in decoded if mask.any()]  # an empty mask has no polygon
        if kept:
            yield [mask for mask, _ in kept], [name for _, name in kept]


def measure(directory: str, out: str) -> None:
    """Each dataset under `directory` through Ultralytics' YOLODataset and polygon2mask."""
    try:
        import ultralytics
        from ultralytics.data.dataset import YOLODataset
        from ultralytics.data.utils import polygon2mask
    except ImportError:
        raise SystemExit("measure runs in Ultralytics' own virtual environment: bash bench/ultralytics_fidelity.sh "
                         "makes it and runs both steps") from None

    sections = []
    for name in sorted(os.listdir(directory)):
        root = os.path.join(directory, name)
        if not os.path.isfile(os.path.join(root, KINDS)):
            continue
        with open(os.path.join(root, KINDS)) as f:
            meta = json.load(f)
        stored = np.load(os.path.join(root, MASKS))
        dataset = YOLODataset(img_path=os.path.join(root, "images"), data={"names": {0: "object"}, "channels": 3},
                              task="segment", augment=False, cache=False)
        groups: Dict[str, List[float]] = defaultdict(list)
        for label in dataset.labels:
            stem = os.path.splitext(os.path.basename(label["im_file"]))[0]
            height, width = label["shape"]
            instances = dataset.update_labels_info(copy.deepcopy(label))["instances"]
            instances.denormalize(width, height)
            masks = np.unpackbits(stored[stem], axis=-1, count=width).astype(bool)
            assert len(instances.segments) == len(masks), (stem, len(instances.segments), len(masks))
            for segment, mask, info in zip(instances.segments, masks, meta["masks"][stem], strict=True):
                drawn = polygon2mask((height, width), [segment.reshape(-1)]).astype(bool)
                iou = float((drawn & mask).sum() / max((drawn | mask).sum(), 1))
                shape = ("one part" if info["parts"] == 1 else "several parts") + (", holes" if info["holes"] else "")
                for group in dict.fromkeys(("all", "one part" if info["parts"] == 1 else "several parts", shape,
                                            f"kind: {info['kind']}")):
                    groups[group].append(iou)
        sections.append(_table(meta["source"], groups))
    text = "\n".join([
        "# YOLO-seg masks as Ultralytics draws them", "",
        "Each mask written as `export --format yolo-seg` writes it, read back by Ultralytics "
        f"{ultralytics.__version__}'s `YOLODataset` (label checks, `resample_segments`) and drawn by its "
        "`polygon2mask` at the image's size (`cv2.fillPoly`), IoU against the mask. Written by "
        "`bash bench/ultralytics_fidelity.sh`.", "",
        *sections, f"Machine: {machine_at_end()}; Python {sys.version.split()[0]}, numpy {np.__version__}.", ""])
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(text)


def _table(source: str, groups: Dict[str, List[float]]) -> str:
    lines = [f"### {source}", "", "| masks | n | min | p1 | p5 | median | mean | exact |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    order = sorted(groups, key=lambda g: (g != "all", g.startswith("kind"), g))
    for group in order:
        v = np.array(groups[group])
        stats = [v.min(), *np.percentile(v, [1, 5, 50]), v.mean()]
        lines.append(f"| {group} | {len(v)} | " + " | ".join(f"{s:.4f}" for s in stats) + f" | {(v == 1).sum()} |")
    return "\n".join(lines + [""])


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    w = sub.add_parser("write", help="write the datasets (the project's environment)")
    w.add_argument("directory")
    w.add_argument("--scenes", type=int, default=300)
    w.add_argument("--side", type=int, default=256)
    w.add_argument("--seed", type=int, default=11)
    w.add_argument("--results", default=None, help="a job's output to measure too (e.g. demo_output/output)")
    m = sub.add_parser("measure", help="draw them with Ultralytics (Ultralytics' environment)")
    m.add_argument("directory")
    m.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "ultralytics_fidelity.md"))
    args = p.parse_args(argv)
    if args.step == "write":
        write(args.directory, args.scenes, args.side, args.seed, args.results)
    else:
        measure(args.directory, args.out)


if __name__ == "__main__":
    main()
