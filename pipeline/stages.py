"""The pipeline's stages: CPU decode → SamHQ model actors → CPU RLE encode.

Each stage is a small class: constructor arguments from the job config, `__call__` on a
pyarrow batch, and `map_batches_kwargs()` for Ray Data. Every stage returns exactly one
row per input row (checked), and a row that fails carries its `error` on through the later
stages instead of being dropped. Columns prefixed `__` are internal to the pipeline.
"""

import io
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from samhq_core import SamHQModel
from samhq_core.processor import resize_longest_side, to_rgb_array

from .config import ComputeConfig, InputConfig, ModelConfig, StorageConfig
from .masks import mask_statistics, upsampled_mask_chunks
from .schema import RESULT_FIELDS, RLE_TYPE
from .storage import filesystem, storage_options

PIXELS = "__pixels"  # resized uint8 RGB image bytes, row-major (h, w, 3)
RESIZED_HW = "__resized_hw"
BOXES = "__boxes"  # usable boxes in the model's input frame, flattened xyxy
RUN_LENGTHS = "__run_lengths"  # per usable box, uncompressed COCO RLE counts
# A decode task's memory, sized from bench/results/decode_memory.md for images up to 4K: the
# worker process with its imports and first decoded image, plus what each further image of
# the batch keeps (its resized copy and encoded bytes), with the 25% headroom Ray Data asks
# for before it warns that a task outgrew its reservation.
_DECODE_WORKER_BYTES = 700 << 20
_DECODE_BYTES_PER_IMAGE = 8 << 20


def _check_rows(stage: str, batch: pa.Table, out: pa.Table) -> pa.Table:
    if out.num_rows != batch.num_rows:
        raise RuntimeError(f"{stage} returned {out.num_rows} rows for {batch.num_rows}")
    return out


def _with_columns(batch: pa.Table, columns: Dict[str, pa.Array]) -> pa.Table:
    for name, values in columns.items():
        if name in batch.column_names:
            batch = batch.set_column(batch.column_names.index(name), name, values)
        else:
            batch = batch.append_column(name, values)
    return batch


def boxes_to_xyxy(boxes: np.ndarray, box_format: str) -> np.ndarray:
    """(N, 4) boxes in xyxy, xywh or cxcywh → xyxy."""
    if box_format == "xywh":
        return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    if box_format == "cxcywh":
        return np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], axis=1)
    return boxes


def check_boxes(boxes: np.ndarray, height: int, width: int) -> Tuple[np.ndarray, List[Optional[str]]]:
    """Clip xyxy boxes to the image; return them with a reason per box that cannot be used."""
    clipped = boxes.copy()
    clipped[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    clipped[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    reasons: List[Optional[str]] = []
    for box, clip in zip(boxes, clipped, strict=True):
        if not np.isfinite(box).all():
            reasons.append("non-finite coordinates")
        elif box[2] < box[0] or box[3] < box[1]:
            reasons.append("inverted box (x2 < x1 or y2 < y1)")
        elif clip[2] <= clip[0] or clip[3] <= clip[1]:
            reasons.append("empty after clipping to the image")
        else:
            reasons.append(None)
    return clipped, reasons


def parse_boxes(value: Any) -> np.ndarray:
    """A row's boxes (null, or a list of 4-number lists) → float64 (N, 4)."""
    if value is None:
        return np.zeros((0, 4))
    try:
        boxes = np.array([[np.nan if v is None else v for v in box] for box in value], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"boxes must be a list of [4 numbers]: {e}") from None
    if boxes.size == 0:
        return np.zeros((0, 4))
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a list of [4 numbers], got shape {boxes.shape}")
    return boxes


def model_pixels(batch: pa.Table, i: int, model: SamHQModel) -> torch.Tensor:
    """Row i's decoded image (DecodeStage output) → the model's normalised, zero-padded
    input (3, S, S) on the model's device, as SamHQProcessor makes it."""
    h, w = batch.column(RESIZED_HW)[i].as_py()
    size = model.config.vision_config.image_size
    image = torch.frombuffer(bytearray(batch.column(PIXELS)[i].as_py()), dtype=torch.uint8).view(h, w, 3)
    image = image.to(model.device, non_blocking=True).permute(2, 0, 1).float()
    pixels = torch.zeros(3, size, size, device=model.device)
    pixels[:, :h, :w] = (image - model.pixel_mean) / model.pixel_std
    return pixels


def _failed_row(error: str, num_boxes: Optional[int]) -> tuple:
    """A decode result for a row that failed: no pixels, boxes or size, the error, and how
    many boxes the row had (None when its boxes could not be read)."""
    return None, None, [], None, [], error, num_boxes


@dataclass
class DecodeStage:
    """CPU tasks: read and decode each image, resize it for the model (PIL bilinear, as the
    official preprocessing), and check, convert and rescale its boxes."""

    inputs: InputConfig
    storage: StorageConfig
    image_size: int
    batch_size: int
    keep_image: bool = False  # copy the image bytes column to the output

    @staticmethod
    def memory_for(batch_size: int) -> int:
        """Bytes a decode task of `batch_size` images reserves."""
        return _DECODE_WORKER_BYTES + batch_size * _DECODE_BYTES_PER_IMAGE

    def memory(self) -> int:
        return self.memory_for(self.batch_size)

    def map_batches_kwargs(self) -> Dict[str, Any]:
        # Having a memory reservation also keeps Ray Data from fusing decoding into the
        # model actors, whose remote args differ, so the model never waits on it.
        return dict(batch_format="pyarrow", batch_size=self.batch_size, num_cpus=1, memory=self.memory())

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [self._row(i, batch) for i in range(batch.num_rows)]
        columns = {
            PIXELS: pa.array([r[0] for r in rows], pa.binary()),
            RESIZED_HW: pa.array([r[1] for r in rows], pa.list_(pa.int32())),
            BOXES: pa.array([r[2] for r in rows], pa.list_(pa.float32())),
            "image_size": pa.array([r[3] for r in rows], pa.list_(pa.int32())),
            "box_errors": pa.array([r[4] for r in rows], pa.list_(pa.string())),
            "error": pa.array([r[5] for r in rows], pa.string()),
            "num_boxes": pa.array([r[6] for r in rows], pa.int32()),
        }
        out = _with_columns(batch, columns)
        if self.inputs.image_column and not self.keep_image:
            out = out.drop_columns([self.inputs.image_column])
        return _check_rows("decode", batch, out)

    def _row(self, i: int, batch: pa.Table) -> tuple:
        boxes_value = batch.column(self.inputs.boxes_column)[i].as_py()
        try:
            boxes = boxes_to_xyxy(parse_boxes(boxes_value), self.inputs.box_format)
        except ValueError as e:
            return _failed_row(f"boxes: {e}", None)
        try:
            data = self._image_bytes(i, batch)
        except Exception as e:  # noqa: BLE001 - any read failure belongs to this row
            return _failed_row(f"image_read: {type(e).__name__}: {e}", len(boxes))
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                array = to_rgb_array(image)
        except Exception as e:  # noqa: BLE001 - corrupt, truncated or unsupported images
            return _failed_row(f"image_decode: {type(e).__name__}: {e}", len(boxes))
        h, w = array.shape[:2]
        resized = resize_longest_side(array, self.image_size)
        new_h, new_w = resized.shape[:2]
        clipped, reasons = check_boxes(boxes, h, w)
        usable = clipped[[r is None for r in reasons]]
        scaled = usable * np.array([new_w / w, new_h / h, new_w / w, new_h / h])
        return resized.tobytes(), [new_h, new_w], scaled.reshape(-1).tolist(), [h, w], reasons, None, len(boxes)

    def _image_bytes(self, i: int, batch: pa.Table) -> bytes:
        if self.inputs.image_column:
            data = batch.column(self.inputs.image_column)[i].as_py()
            if data is None:
                raise ValueError(f"{self.inputs.image_column} is null")
            return data
        uri = batch.column(self.inputs.image_uri_column)[i].as_py()
        if not uri:
            raise ValueError(f"{self.inputs.image_uri_column} is empty")
        fs, path = filesystem(uri, self.storage)
        with fs.open(path, "rb") as f:
            return f.read()


class SamHQStage:
    """Model actors: one SAM-HQ replica each. Runs the image encoder on the batch's images,
    the HQ decoder on all usable boxes of each image (in bounded chunks), and upsamples,
    thresholds and run-length-codes the masks on the actor's device."""

    def __init__(self, model: ModelConfig, storage: StorageConfig, image_size: int,
                 torch_threads: Optional[int] = None) -> None:
        self.config = model
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.model = SamHQModel.from_pretrained(
            model.checkpoint, variant=model.variant, sha256=model.sha256, storage_options=storage_options(storage)
        ).to(self.device)
        self.image_size = self.model.config.vision_config.image_size
        if self.image_size != image_size:  # the decode tasks resized every image for `image_size`
            raise ValueError(f"{model.checkpoint} loaded a model of input size {self.image_size}, but the job "
                             f"resizes images for {image_size}: was the checkpoint replaced while the job started?")

    @staticmethod
    def map_batches_kwargs(model: ModelConfig, storage: StorageConfig, compute: ComputeConfig, num_gpus: float,
                           image_size: int) -> Dict[str, Any]:
        from ray.data import ActorPoolStrategy

        return dict(
            batch_format="pyarrow",
            batch_size=compute.batch_size,
            compute=ActorPoolStrategy(size=compute.num_actors),
            num_gpus=num_gpus,
            num_cpus=compute.num_cpus_per_actor,
            fn_constructor_kwargs=dict(model=model, storage=storage, image_size=image_size,
                                       torch_threads=compute.torch_threads),
            # On CPU the actors share cores with the decode and encode tasks; spinning OpenMP
            # threads would burn the time slices those need (bench/results/cpu_pipeline.md).
            runtime_env={"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}},
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        errors = batch.column("error").to_pylist()
        results: List[Optional[tuple]] = [None] * batch.num_rows
        has_boxes = [len(b) > 0 for b in batch.column(BOXES).to_pylist()]
        for i, error in enumerate(errors):
            if error is None and not has_boxes[i]:
                results[i] = self._decode(batch, i, None)
        todo = [i for i, error in enumerate(errors) if error is None and has_boxes[i]]
        embeddings = None
        if todo:
            try:
                embeddings = self._encode(batch, todo)
            except Exception:  # noqa: BLE001 - isolate the failing image below, one at a time
                embeddings = None
        for k, i in enumerate(todo):
            try:
                features = (embeddings[0][k : k + 1], embeddings[1][k : k + 1]) if embeddings else self._encode(batch, [i])
                results[i] = self._decode(batch, i, features)
            except Exception as e:  # noqa: BLE001 - a bad row never kills the job
                errors[i] = f"model: {type(e).__name__}: {e}"
        empty = ([], [], [], [])
        results = [r if r is not None else empty for r in results]
        columns = {
            RUN_LENGTHS: pa.array([r[0] for r in results], pa.list_(pa.list_(pa.int64()))),
            "iou_scores": pa.array([r[1] for r in results], pa.list_(pa.float32())),
            "mask_areas": pa.array([r[2] for r in results], pa.list_(pa.int64())),
            "mask_bboxes": pa.array([r[3] for r in results], pa.list_(pa.list_(pa.float32()))),
            "error": pa.array(errors, pa.string()),
        }
        out = _with_columns(batch, columns).drop_columns([PIXELS, BOXES])
        return _check_rows("model", batch, out)

    def _autocast(self):
        enabled = self.config.dtype == "bfloat16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    @torch.inference_mode()
    def _encode(self, batch: pa.Table, rows: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.stack([model_pixels(batch, i, self.model) for i in rows])
        with self._autocast():
            return self.model.get_image_embeddings(pixels)

    @torch.inference_mode()
    def _decode(self, batch: pa.Table, i: int, features: Optional[Tuple[torch.Tensor, torch.Tensor]]) -> tuple:
        h, w = batch.column("image_size")[i].as_py()
        resized_hw = tuple(batch.column(RESIZED_HW)[i].as_py())
        usable = torch.tensor(batch.column(BOXES)[i].as_py(), dtype=torch.float32).view(1, -1, 4)
        reasons = batch.column("box_errors")[i].as_py()
        counts, scores, areas, boxes = [], np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
        if usable.shape[1]:
            with self._autocast():
                out = self.model(
                    image_embeddings=features[0], intermediate_embeddings=features[1], input_boxes=usable.to(self.device),
                    multimask_output=self.config.multimask_output, hq_token_only=self.config.hq_token_only,
                    sam_only=self.config.sam_only,
                    prompt_chunk_size=self.config.box_chunk_size,
                )
            stats = [mask_statistics(masks) for masks in upsampled_mask_chunks(
                out.pred_masks[0, :, 0], self.image_size, resized_hw, (h, w), self.config.mask_threshold)]
            counts = [c for chunk in stats for c in chunk[0]]
            areas = np.concatenate([chunk[1] for chunk in stats])
            boxes = np.concatenate([chunk[2] for chunk in stats])
            scores = out.iou_scores[0, :, 0].float().cpu().numpy()
        # Boxes that could not be used get an empty mask, NaN score, zero area and box.
        row_counts, row_scores, row_areas, row_boxes, k = [], [], [], [], 0
        for reason in reasons:
            if reason is None:
                row_counts.append(counts[k])
                row_scores.append(float(scores[k]))
                row_areas.append(int(areas[k]))
                row_boxes.append(boxes[k].tolist())
                k += 1
            else:
                row_counts.append([h * w])
                row_scores.append(float("nan"))
                row_areas.append(0)
                row_boxes.append([0.0, 0.0, 0.0, 0.0])
        return row_counts, row_scores, row_areas, row_boxes


@dataclass
class EncodeStage:
    """CPU tasks: compress run lengths into pycocotools RLE strings and shape the output
    columns (id, passthrough, results); counts finished rows on `row_counter` (an actor with
    an `add` method) when given."""

    keep_columns: List[str]
    row_counter: Any = None

    def map_batches_kwargs(self) -> Dict[str, Any]:
        return dict(batch_format="pyarrow", num_cpus=1)

    def __call__(self, batch: pa.Table) -> pa.Table:
        sizes = batch.column("image_size").to_pylist()
        masks = []
        for size, row_counts in zip(sizes, batch.column(RUN_LENGTHS).to_pylist(), strict=True):
            if not row_counts:
                masks.append([])
                continue
            h, w = size
            encoded = mask_utils.frPyObjects([{"counts": c, "size": [h, w]} for c in row_counts], h, w)
            masks.append([{"size": [h, w], "counts": m["counts"].decode("ascii")} for m in encoded])
        batch = _with_columns(batch, {"masks": pa.array(masks, pa.list_(RLE_TYPE))})
        columns = {name: batch.column(name) for name in self.keep_columns}
        for field in RESULT_FIELDS:
            columns[field.name] = batch.column(field.name).cast(field.type)
        out = _check_rows("encode", batch, pa.table(columns))
        if self.row_counter is not None:
            self.row_counter.add.remote(out.num_rows)
        return out
