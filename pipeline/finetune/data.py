"""Fine-tuning's labelled data: the rows of a Parquet of images, boxes and ground-truth masks,
decoded by the job's own decode stage (so that training sees what inference sees), as model
inputs with their targets; a stable hold-out by id hash; endless shuffled training batches.

A row that cannot be used (undecodable image, bad boxes, masks not aligned with the boxes or of
another size) is skipped and counted by reason, never silently."""

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import torch

from samhq_core import SamHQModel, SamHQProcessor
from samhq_core.training.recipe import Batch

from ..config import DataConfig, StorageConfig
from ..ids import stable_hash
from ..inputs.images import input_directory
from ..masks import rle
from ..schema import BOX_ERRORS, BOXES, ERROR, IMAGE_SIZE, PIXELS, RESIZED_HW, error_kind
from ..stages import DecodeUDF, StageRunner
from ..storage import Location, ParquetInput

_DECODE_BATCH_ROWS = 16


@dataclass
class Example:
    """One usable row in the model frame, with its ground truth at the original size."""

    id: Any
    pixels: torch.Tensor  # (3, S, S) normalised
    boxes: torch.Tensor  # (P, 4) xyxy in the S x S frame
    targets: torch.Tensor  # (P, S, S) in [0, 1]: the masks resized like the image, zero-padded
    truth: List[Dict[str, Any]]  # P COCO RLEs at the original size, as pycocotools takes them
    resized_hw: Tuple[int, int]
    original_hw: Tuple[int, int]


class LabelledImages:
    """Examples from a Parquet of images, boxes and masks, decoded by the pipeline's decode stage."""

    def __init__(self, url: str, data: DataConfig, storage: StorageConfig, model: SamHQModel) -> None:
        self.data, self.model = data, model
        self.processor = SamHQProcessor.for_model(model)
        self.input = ParquetInput(Location(url, storage), "data")
        self.decode = StageRunner(DecodeUDF.stage(data, storage, self.processor.image_size, _DECODE_BATCH_ROWS,
                                                  keep_image=False, directory=input_directory(self.input.location)))
        self.skipped: Counter = Counter()  # reason -> rows (or boxes) not used
        self.columns = [data.id_column, data.boxes_column, data.masks_column, data.image_source_column]

    def examples(self, split: Optional[str]) -> Iterator[Example]:
        """One pass over the usable rows; split "train" / "validation" keeps that side of the
        id-hash hold-out, None keeps every row."""
        for record_batch in self.input.batches(self.columns, batch_rows=_DECODE_BATCH_ROWS):
            table = pa.Table.from_batches([record_batch])
            if split is not None:
                keep = [in_validation(v, self.data.validation_fraction) == (split == "validation")
                        for v in table.column(self.data.id_column).to_pylist()]
                table = table.filter(pa.array(keep, pa.bool_()))
            decoded = self.decode(table)
            for i in range(decoded.num_rows):
                example = self._example(decoded, i)
                if example is not None:
                    yield example

    def _example(self, decoded: pa.Table, i: int) -> Optional[Example]:
        kind = error_kind(decoded.column(ERROR)[i].as_py())
        if kind is not None:
            self.skipped[f"row: {kind}"] += 1
            return None
        h, w = decoded.column(IMAGE_SIZE)[i].as_py()
        box_errors = decoded.column(BOX_ERRORS)[i].as_py()
        masks = decoded.column(self.data.masks_column)[i].as_py()
        if masks is None or len(masks) != len(box_errors):
            self.skipped["row: masks not aligned with boxes"] += 1
            return None
        usable = torch.tensor(decoded.column(BOXES)[i].as_py(), dtype=torch.float32).view(-1, 4)
        for reason in box_errors:
            if reason is not None:  # the box is not among the usable boxes the model sees
                self.skipped[f"box: {reason}"] += 1
        usable_masks = [mask for mask, reason in zip(masks, box_errors, strict=True) if reason is None]
        keep, truth, pixels = [], [], []  # indexes into the usable boxes, their RLEs and decoded masks
        for index, mask in enumerate(usable_masks):
            if mask is None:
                self.skipped["box: mask null (not annotated)"] += 1
                continue
            try:
                stored = rle.for_pycocotools(mask, "data", "mask")
                mask_pixels = rle.decode(stored, "data", "mask")
            except (ValueError, TypeError):  # pycocotools: "Invalid RLE mask representation"
                self.skipped["box: mask not a valid COCO RLE"] += 1
                continue
            if mask_pixels.shape != (h, w):
                self.skipped["box: mask size differs from the image"] += 1
                continue
            keep.append(index)
            truth.append(stored)
            pixels.append(mask_pixels)
        if not keep:
            self.skipped["row: no usable annotated box"] += 1
            return None
        rh, rw = decoded.column(RESIZED_HW)[i].as_py()
        image = torch.frombuffer(bytearray(decoded.column(PIXELS)[i].as_py()), dtype=torch.uint8).view(rh, rw, 3)
        targets = self.processor.target_masks(torch.from_numpy(np.stack(pixels).astype(np.float32)), (rh, rw))
        return Example(decoded.column(self.data.id_column)[i].as_py(), self.processor.model_input(image),
                       usable[keep], targets, truth, (rh, rw), (h, w))


def in_validation(row_id: Any, fraction: float) -> bool:
    """Whether an id falls in the held-out validation split (stable across runs and machines)."""
    return stable_hash(row_id) % 10_000 < fraction * 10_000


def training_batches(source: LabelledImages, split: Optional[str], batch_size: int, buffer: int,
                     seed: int, device: torch.device) -> Iterator[Batch]:
    """Endless shuffled batches over the split (epoch after epoch, through a shuffle buffer)."""
    rng = random.Random(seed)
    pending: List[Example] = []
    while True:
        seen = 0
        for example in source.examples(split):
            seen += 1
            pending.append(example)
            if len(pending) >= buffer + batch_size:
                yield _batch([pending.pop(rng.randrange(len(pending))) for _ in range(batch_size)], device)
        if seen == 0:
            raise ValueError(f"no usable training rows in {source.input.url} (skipped: {dict(source.skipped)})")
        rng.shuffle(pending)
        while len(pending) >= batch_size:
            yield _batch([pending.pop() for _ in range(batch_size)], device)


def _batch(examples: List[Example], device: torch.device) -> Batch:
    return Batch(torch.stack([e.pixels for e in examples]), [e.boxes for e in examples],
                 [e.targets for e in examples]).to(device)
