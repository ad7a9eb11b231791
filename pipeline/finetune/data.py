"""Fine-tuning's labelled data: the rows of a Parquet of images, boxes and ground-truth masks,
decoded by the job's own decode stage (so that training sees what inference sees), as model
inputs with their targets; a stable hold-out by id hash; endless shuffled training batches in
this process, or the training rows as a Ray Data dataset for Ray Train's workers.

A row that cannot be used (undecodable image, bad boxes, masks not aligned with the boxes or of
another size) is skipped and counted by reason, never silently."""

import functools
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import ray
import torch

from samhq_core import SamHQModel, SamHQProcessor
from samhq_core.training.recipe import Batch

from ..config import DataConfig, FinetuneConfig, StorageConfig
from ..ids import stable_hash
from ..inputs.images import input_directory
from ..masks import rle
from ..schema import BOX_ERRORS, BOXES, ERROR, IMAGE_SIZE, PIXELS, RESIZED_HW, error_kind
from ..stages import DecodeUDF, Stage, StageRunner
from ..storage import Location, ParquetInput

# Rows a decode task (or this process's decode stage) decodes at a time.
DECODE_BATCH_ROWS = 16


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


class ExampleMaker:
    """Examples from the rows of the decode stage's output; the rows it cannot use are counted
    in `skipped` by reason (boxes it cannot use, too)."""

    def __init__(self, data: DataConfig, processor: SamHQProcessor) -> None:
        self.data, self.processor = data, processor
        self.skipped: Counter = Counter()  # reason -> rows (or boxes) not used

    def examples(self, decoded: pa.Table) -> Iterator[Example]:
        """The usable rows of a decoded batch, in order."""
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


class LabelledImages:
    """Examples from a Parquet of images, boxes and masks, decoded by the pipeline's decode stage."""

    def __init__(self, url: str, data: DataConfig, storage: StorageConfig, model: SamHQModel) -> None:
        self.data, self.model = data, model
        self.processor = SamHQProcessor.for_model(model)
        self.input = ParquetInput(Location(url, storage), "data")
        self.decode = StageRunner(decode_stage(data, storage, self.processor.image_size, self.input.location))
        self.maker = ExampleMaker(data, self.processor)
        self.columns = read_columns(data)

    @property
    def skipped(self) -> Counter:
        """Reason -> rows (or boxes) not used, over every pass so far."""
        return self.maker.skipped

    def examples(self, split: Optional[str]) -> Iterator[Example]:
        """One pass over the usable rows; split "train" / "validation" keeps that side of the
        id-hash hold-out, None keeps every row."""
        for record_batch in self.input.batches(self.columns, batch_rows=DECODE_BATCH_ROWS):
            table = pa.Table.from_batches([record_batch])
            if split is not None:
                table = split_rows(table, self.data.id_column, self.data.validation_fraction, split)
            yield from self.maker.examples(self.decode(table))


def read_columns(data: DataConfig) -> List[str]:
    """The columns of the labelled Parquet that fine-tuning reads."""
    return list(dict.fromkeys([data.id_column, data.boxes_column, data.masks_column, data.image_source_column]))


def decode_stage(data: DataConfig, storage: StorageConfig, image_size: int, location: Location) -> Stage:
    """The job's decode stage for the labelled rows of `location`: the image bytes are not
    handed on (the decoded pixels are)."""
    return DecodeUDF.stage(data, storage, image_size, DECODE_BATCH_ROWS, keep_image=False,
                           directory=input_directory(location))


def split_rows(table: pa.Table, id_column: str, fraction: float, split: str) -> pa.Table:
    """The rows of `table` on one side ("train" or "validation") of the id-hash hold-out."""
    keep = [in_validation(v, fraction) == (split == "validation") for v in table.column(id_column).to_pylist()]
    return table.filter(pa.array(keep, pa.bool_()))


def training_dataset(config: FinetuneConfig, image_size: int) -> ray.data.Dataset:
    """data.train's training rows (without the held-out ones when there is no
    data.validation) through the decode stage, as a Ray Data dataset: what Ray Train's
    workers read, each its shard."""
    data = config.data
    location = Location(data.train, config.storage)
    fs, _ = location.arrow()
    ds = ray.data.read_parquet(location.parquet_files(), filesystem=fs).select_columns(read_columns(data))
    if data.validation is None:
        ds = ds.map_batches(functools.partial(split_rows, id_column=data.id_column,
                                              fraction=data.validation_fraction, split="train"),
                            batch_format="pyarrow")
    ds = decode_stage(data, config.storage, image_size, location).apply(ds)
    ds.context.enable_progress_bars = False  # the run prints its own progress
    return ds


def load_validation(source: LabelledImages, split: Optional[str], limit: int) -> List[Example]:
    """Up to `limit` usable rows of the split, held in memory for the scores before and after;
    ValueError when there is none."""
    examples: List[Example] = []
    for example in source.examples(split):
        examples.append(example)
        if len(examples) == limit:
            break
    if not examples:
        raise ValueError("no usable validation rows: give data.validation or more data "
                         f"(skipped: {dict(source.skipped)})")
    return examples


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
                yield to_batch([pending.pop(rng.randrange(len(pending))) for _ in range(batch_size)], device)
        if seen == 0:
            raise ValueError(f"no usable training rows in {source.input.url} (skipped: {dict(source.skipped)})")
        rng.shuffle(pending)
        while len(pending) >= batch_size:
            yield to_batch([pending.pop() for _ in range(batch_size)], device)


def to_batch(examples: List[Example], device: torch.device) -> Batch:
    """The examples as one training batch on `device`."""
    return Batch(torch.stack([e.pixels for e in examples]), [e.boxes for e in examples],
                 [e.targets for e in examples]).to(device)
