"""How faithfully the COCO polygon export keeps the masks: each mask through
`pipeline.masks.polygons.coco_polygons`, drawn back with pycocotools' rasteriser, compared with
the mask by IoU. (YOLO-seg's polygons are drawn by Ultralytics' own rule:
bench/ultralytics_fidelity.py measures them with Ultralytics.)

Masks: the exact masks of synthetic scenes (`samhq_core.training.synthetic`: filled shapes,
rings and frames with holes, wires, twigs, strokes) and, with --results, a job's output masks
(e.g. the demo's, demo_output/output). Also, for the masks without holes, OpenCV's contours
taken as they are (pixel-centre coordinates) and shifted by half a pixel (as Detectron2
does), to show why the export puts its rings on the pixel edges.

    python -m bench.polygon_fidelity --results demo_output/output
"""

import argparse
import os
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from bench.common.machine import machine_at_end
from pipeline.masks import polygons, rle
from pipeline.output import JobOutput
from pipeline.output.results import ResultReader, job_columns
from samhq_core.training.synthetic import make_scene

TOLERANCES = (0.0, 0.5, 1.0)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def rasterise(polys: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    rles = mask_utils.frPyObjects([[float(v) for v in p] for p in polys], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def opencv_as_is(mask: np.ndarray, shift: float) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = [(c[:, 0, :] + shift).ravel().tolist() for c in contours]
    # pycocotools reads a 4-value list as a box and cannot draw fewer than 3 points.
    polys = [p if len(p) > 4 else (p * 3)[:6] for p in polys]
    return rasterise(polys, *mask.shape)


def synthetic_masks(num_scenes: int, side: int, seed: int) -> Iterator[Tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    for _ in range(num_scenes):
        scene = make_scene(rng, side, side)
        yield from zip(scene.kinds, scene.masks, strict=True)


def result_masks(path: str) -> Iterator[Tuple[str, np.ndarray]]:
    output = JobOutput(path)
    reader = ResultReader(output, job_columns(output))
    names: Dict[int, str] = {}
    for image in reader.images():
        for mask in image.masks:
            names = names if mask.category_id in names else {c["id"]: c["name"] for c in reader.categories()}
            yield names[mask.category_id], rle.decode(mask.rle, image.file_name, f"mask {mask.box_index}")


def measure(masks: Iterator[Tuple[str, np.ndarray]]) -> Dict[str, Dict[str, List[float]]]:
    """measure name → group ("all", "kind: ...", "with holes", "without holes") → values."""
    out: Dict[str, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    for kind, mask in masks:
        holes = any(part.holes for part in polygons.components(mask))
        groups = ["all", f"kind: {kind}", "with holes" if holes else "without holes"]

        def add(name: str, value: float, groups: List[str] = groups) -> None:
            for group in groups:
                out[name][group].append(value)

        for simplify in TOLERANCES:
            coco = polygons.coco_polygons(mask, simplify)
            if coco is not None:
                add(f"COCO polygons, simplify {simplify:g} px", iou(rasterise(coco, *mask.shape), mask))
                add(f"COCO polygons, simplify {simplify:g} px: vertices", sum(len(p) // 2 for p in coco))
        if not holes:
            add("OpenCV contours as they are (pixel centres at integers)", iou(opencv_as_is(mask, 0.0), mask))
            add("OpenCV contours + 0.5 px (pixel centres)", iou(opencv_as_is(mask, 0.5), mask))
    return out


def table(results: Dict[str, Dict[str, List[float]]], title: str) -> str:
    lines = [f"### {title}", ""]
    for name, groups in results.items():
        vertices = name.endswith("vertices")
        lines += [f"**{name}**" + (" (per mask)" if vertices else " (IoU)"), ""]
        lines += ["| masks | n | min | p1 | p5 | median | mean |", "|---|---:|---:|---:|---:|---:|---:|"]
        for group in sorted(groups, key=lambda g: (g != "all", not g.startswith("with"), g)):
            v = np.array(groups[group])
            stats = [v.min(), *np.percentile(v, [1, 5, 50]), v.mean()]
            fmt = "{:.0f}" if vertices else "{:.4f}"
            lines.append(f"| {group} | {len(v)} | " + " | ".join(fmt.format(s) for s in stats) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=int, default=300)
    p.add_argument("--side", type=int, default=256)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--results", default=None, help="a job's output to measure too (e.g. demo_output/output)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "polygon_fidelity.md"))
    args = p.parse_args(argv)
    sections = [table(measure(synthetic_masks(args.scenes, args.side, args.seed)),
                      f"Exact masks of {args.scenes} synthetic scenes ({args.side} x {args.side}, seed {args.seed})")]
    if args.results:
        sections.append(table(measure(result_masks(args.results)), f"The job's output masks at {args.results}"))
    text = "\n".join([
        "# Polygon fidelity of the exports", "",
        "Each mask as the COCO polygon export writes it (masks without holes only, since masks with holes keep "
        "their RLE), rasterised back with pycocotools (`frPyObjects` → `decode`), IoU against the mask; YOLO-seg: "
        "ultralytics_fidelity.md. Written by "
        "`python -m bench.polygon_fidelity" + (f" --results {args.results}" if args.results else "") + "`.", "",
        *sections, f"Machine: {machine_at_end()}.", ""])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
