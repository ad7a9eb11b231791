"""`demo-correct`: a stand-in for a person who reviews the demo's masks in Label Studio.

The demo's scenes come with their exact masks, so the corrections a reviewer would make are
known: `correct_tasks` takes the Label Studio tasks that `export --format label-studio` wrote
for a demo job and returns them as Label Studio's JSON export returns a reviewed project (each
task with its `id`, its `predictions`, and one submitted annotation), every predicted region
replaced by the exact mask of its box, under the same region id, as a reviewer who redraws a
pre-annotated region leaves it. Objects the job gave no mask (a skipped box) are added as new
regions. `python -m pipeline import --format label-studio` reads the result like a real
export, so the whole labelling loop runs without a person.

The export names each region `<task index>_<box index>`: the box index after the last `_` is
which exact mask corrects it.
"""

import json
from collections import Counter
from typing import Any, Dict, List, Tuple

import numpy as np
import pyarrow.parquet as pq

from ..exports.label_studio import brush_region
from ..masks import brush, rle
from ..schema import GROUND_TRUTH_MASKS

STAND_IN = "pipeline demo-correct"  # in each task's meta, so that a later run knows its own output
_SUBMITTED_AT = "2026-01-01T00:00:00.000000Z"  # fixed, so that the same input gives the same export
_REVIEWER = 1  # the user id Label Studio gives the first account


def correct_tasks(tasks: List[Dict[str, Any]], truth: Dict[Any, Tuple[List[Any], List[str]]]
                  ) -> Tuple[List[Dict[str, Any]], Counter]:
    """The tasks as a reviewed Label Studio project's JSON export, and what the review did.

    Arguments:
      tasks: Label Studio tasks as `export --format label-studio` writes them.
      truth: row id -> (its exact masks as stored COCO RLEs, their category names), in box order.

    Returns:
      The exported tasks, and counts: tasks, redrawn (the prediction differed from the exact
      mask), kept (it was exact), added (no prediction), no_ground_truth (tasks left
      unreviewed).
    """
    counts: Counter = Counter()
    reviewed = []
    for number, task in enumerate(tasks, start=1):
        counts["tasks"] += 1
        out = {**task, "id": number, "meta": {**task.get("meta", {}), "reviewed_by": STAND_IN}, "annotations": []}
        reviewed.append(out)
        row_id = task["data"].get("source_id")
        if row_id not in truth:
            counts["no_ground_truth"] += 1
            continue
        masks, labels = truth[row_id]
        regions = [r for p in task.get("predictions", []) for r in p["result"]]
        covered = set()
        result = []
        for region in regions:
            box = int(str(region["id"]).rsplit("_", 1)[-1])
            covered.add(box)
            exact = rle.decode(masks[box], f"ground truth {row_id!r}", f"mask {box}")
            predicted = brush.decode(region["value"]["rle"], region["original_height"], region["original_width"])
            counts["kept" if np.array_equal(predicted, exact) else "redrawn"] += 1
            result.append(_reviewed(region["id"], exact, labels[box]))
        for box in sorted(set(range(len(masks))) - covered):
            counts["added"] += 1
            exact = rle.decode(masks[box], f"ground truth {row_id!r}", f"mask {box}")
            result.append(_reviewed(f"{number}_added_{box}", exact, labels[box]))
        out["annotations"] = [{"id": number, "task": number, "completed_by": _REVIEWER, "result": result,
                               "was_cancelled": False, "ground_truth": False, "created_at": _SUBMITTED_AT,
                               "updated_at": _SUBMITTED_AT}]
    return reviewed, counts


def _reviewed(region_id: str, mask: np.ndarray, category: str) -> Dict[str, Any]:
    return {**brush_region(region_id, mask, category), "origin": "manual"}


def read_truth(path: str, id_column: str, category_column: str) -> Dict[Any, Tuple[List[Any], List[str]]]:
    """The demo's ground truth Parquet as `correct_tasks` takes it."""
    table = pq.read_table(path, columns=[id_column, GROUND_TRUTH_MASKS, category_column]).to_pylist()
    return {row[id_column]: (row[GROUND_TRUTH_MASKS], row[category_column]) for row in table}


def write_corrected(tasks_path: str, truth_path: str, output_path: str, id_column: str = "image_id",
                    category_column: str = "labels") -> Counter:
    """Read the tasks and the ground truth, write the reviewed export; refuses to replace a
    file it did not write (ValueError)."""
    try:
        with open(output_path, encoding="utf-8") as f:
            earlier = json.load(f)
    except FileNotFoundError:
        earlier = None
    except (ValueError, UnicodeDecodeError):
        earlier = [{}]
    if earlier is not None and not (isinstance(earlier, list) and earlier and isinstance(earlier[0], dict)
                                    and earlier[0].get("meta", {}).get("reviewed_by") == STAND_IN):
        raise ValueError(f"{output_path} exists and is not an earlier demo-correct output: choose another --output "
                         "(nothing is replaced)")
    with open(tasks_path, encoding="utf-8") as f:
        tasks = json.load(f)
    if not isinstance(tasks, list):
        raise ValueError(f"{tasks_path}: not a JSON array of Label Studio tasks (export --format label-studio writes one)")
    reviewed, counts = correct_tasks(tasks, read_truth(truth_path, id_column, category_column))
    with open(output_path, "w", encoding="utf-8") as f:
        json.dump(reviewed, f)
    return counts
