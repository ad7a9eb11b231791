"""The decode stage (CPU tasks): read and decode each image, resize it for the model, and
check, convert and rescale its prompts (boxes, points, mask prompts: the processor's
transforms, as the official preprocessing does them); for a row segment-everything runs on,
also its crops, each resized (the automatic generator's `prepare`)."""

import io
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Tuple

import numpy as np
import pyarrow as pa
from PIL import Image

from samhq_core import SamHQProcessor
from samhq_core.automatic import PreparedCrop, PreparedImage, prepare_image

from ..config import EverythingConfig, ImageColumnsConfig, StorageConfig
from ..inputs.boxes import per_box_mismatch
from ..inputs.images import ImageReader
from ..inputs.prompts import Prompt, PromptCountError, read_prompts
from ..schema import (
    BOXES,
    CROP_HW,
    CROP_PIXELS,
    EVERYTHING,
    MASK_INPUTS,
    PIXELS,
    POINT_LABELS,
    POINTS,
    PROMPT_KINDS,
    RESIZED_HW,
    exception_detail,
    row_error,
)
from .contract import Stage, StageUDF, column

# A decode task's memory, sized from bench/results/decode_memory.md for images up to 4K: the
# worker process with its imports and first decoded image, plus what each further image of
# the batch keeps (its resized copy and encoded bytes), with the 25% headroom Ray Data asks
# for before it warns that a task outgrew its reservation. Images larger than 4K (up to
# input.max_image_pixels, decoded one at a time) add their decoded RGB and its array copy.
_DECODE_WORKER_BYTES = 700 << 20
_DECODE_BYTES_PER_IMAGE = 8 << 20
_MEASURED_PIXELS = 3840 * 2160
_BYTES_PER_EXTRA_PIXEL = 6


@dataclass
class DecodedImage:
    """One row, decoded: the image resized for the model, its usable prompts in the model's
    frame (`pipeline.schema`'s internal columns), and what the output reports about it."""

    pixels: Optional[bytes] = column(PIXELS, default=None)
    resized_hw: Optional[List[int]] = column(RESIZED_HW, default=None)
    boxes: List[float] = column(BOXES, default_factory=list)
    points: List[List[float]] = column(POINTS, default_factory=list)
    point_labels: List[List[int]] = column(POINT_LABELS, default_factory=list)
    mask_inputs: List[Optional[bytes]] = column(MASK_INPUTS, default_factory=list)
    prompt_kinds: List[str] = column(PROMPT_KINDS, default_factory=list)
    everything: bool = column(EVERYTHING, default=False)
    crop_pixels: List[bytes] = column(CROP_PIXELS, default_factory=list)
    crop_hw: List[List[int]] = column(CROP_HW, default_factory=list)
    image_size: Optional[List[int]] = None
    box_errors: List[Optional[str]] = field(default_factory=list)
    error: Optional[str] = None
    num_boxes: Optional[int] = None

    @classmethod
    def passthrough(cls) -> "DecodedImage":
        return cls()

    @classmethod
    def failed(cls, error: str, num_boxes: Optional[int]) -> "DecodedImage":
        """A row that failed here: the error, and how many prompts it had (None when its
        prompts could not be read)."""
        return cls(error=error, num_boxes=num_boxes)


class DecodeUDF(StageUDF):
    """Per row: the image read (bytes column, `datasets` Image column or URI) and decoded,
    resized by the processor, and its prompts read (`pipeline.inputs.prompts`: boxes
    converted to xyxy and clipped, points and mask prompts checked against the image) and
    brought into the model's frame: boxes and points scaled, mask prompts as low-res logits.
    A row whose id is null or empty, whose prompt columns disagree on the number of prompts,
    or whose boxes, image read or image decode fail, gets its `error`. A `datasets` Image
    column's row gives its bytes, or where they are null its path, read as an image URI.
    Image URIs must lie under input.allowed_uri_prefixes and
    name a regular file of at most input.max_image_bytes, read within input.read_timeout_s;
    images over input.max_image_pixels are refused before they are decoded."""

    result_type = DecodedImage

    def __init__(self, inputs: ImageColumnsConfig, storage: StorageConfig, image_size: int,
                 per_box: Optional[Mapping[str, str]] = None, directory: Optional[str] = None,
                 everything: Optional[EverythingConfig] = None) -> None:
        self.inputs, self.storage = inputs, storage
        self.everything = everything if everything is not None else EverythingConfig()
        self.prompts = inputs.prompt_columns()
        self.per_box = dict(per_box or {})  # config key -> column whose rows hold an entry per prompt
        self.processor = SamHQProcessor(image_size)
        # Pillow's own bomb check (a warning above the limit, an error above twice it) agrees
        # with the explicit check in _decode.
        Image.MAX_IMAGE_PIXELS = inputs.max_image_pixels
        self._reader = ImageReader(inputs, storage, directory)

    @classmethod
    def stage(cls, inputs: ImageColumnsConfig, storage: StorageConfig, image_size: int, batch_size: int,
              keep_image: bool, per_box: Optional[Mapping[str, str]] = None, directory: Optional[str] = None,
              everything: Optional[EverythingConfig] = None) -> Stage:
        """CPU tasks of `batch_size` rows; the image bytes column is handed on with `keep_image`;
        `per_box`: the columns (by the config key naming each) besides the prompt columns that
        must hold an entry per prompt;
        `directory`: the input's, which relative image paths are read against;
        `everything`: which rows segment-everything runs on, and their crops."""
        everything = everything if everything is not None else EverythingConfig()
        memory = decode_task_memory(inputs, everything, batch_size, image_size)
        per_box = dict(per_box or {})
        prompts = inputs.prompt_columns()
        kinds = [key.split(".", 1)[1].removesuffix("_column") for key, _ in prompts.named()]
        checks = (f"check boxes ({inputs.box_format})" if prompts.noun == "box" else "check prompts (" + ", ".join(
            f"boxes {inputs.box_format}" if kind == "boxes" else kind for kind in kinds) + ")")
        if not kinds:
            checks = "no prompts"
        if everything.enabled and everything.crop_n_layers:
            checks += f", cut {everything.crops_per_image} crops for segment-everything"
        return Stage(
            name="decode",
            udf=cls,
            constructor_kwargs=dict(inputs=inputs, storage=storage, image_size=image_size, per_box=per_box,
                                    directory=directory, everything=everything),
            # Having a memory reservation also keeps Ray Data from fusing decoding into the model
            # actors, whose remote args differ, so the model never waits on it.
            map_batches_kwargs=dict(batch_format="pyarrow", batch_size=batch_size, num_cpus=1, memory=memory),
            description=f"CPU tasks of {batch_size} images (1 CPU, {memory / 2**20:.0f} MiB each): read, decode, "
                        f"resize to {image_size} px, {checks}",
            required_columns=(inputs.id_column, inputs.image_source_column, *(c for _, c in prompts.named()),
                              *per_box.values()),
            dropped_columns=(inputs.image_column,) if inputs.image_column and not keep_image else (),
        )

    def process(self, batch: pa.Table) -> List[DecodedImage]:
        return [self._row(batch, i) for i in range(batch.num_rows)]

    def _row(self, batch: pa.Table, i: int) -> DecodedImage:
        try:
            prompts = read_prompts({c: batch.column(c)[i].as_py() for _, c in self.prompts.named()}, self.prompts)
        except PromptCountError as e:
            return DecodedImage.failed(row_error("per_box", str(e)), None)
        except ValueError as e:
            return DecodedImage.failed(row_error("boxes", str(e)), None)
        count = prompts.count
        for key, name in self.per_box.items():
            entries = batch.column(name)[i].as_py()
            if entries is not None and len(entries) != count:
                mismatch = per_box_mismatch(key, name, len(entries), count, self.prompts.noun)
                return DecodedImage.failed(row_error("per_box", mismatch), count)
        row_id = batch.column(self.inputs.id_column)[i].as_py()
        if row_id is None or row_id == "":
            return DecodedImage.failed(row_error("id", f"{self.inputs.id_column} is {'null' if row_id is None else 'empty'}: "
                                                       "give every row a distinct id"), count)
        try:
            data = self._image_bytes(batch, i)
        except Exception as e:  # noqa: BLE001 - any read failure belongs to this row
            return DecodedImage.failed(row_error("image_read", exception_detail(e)), count)
        everything = self.everything.runs_on(count > 0)
        crops: List[PreparedCrop] = []  # the crop layers' crops, after the whole image
        try:
            if everything and self.everything.crop_n_layers:
                prepared = self._decode_crops(data)
                resized, (h, w), crops = prepared.crops[0].resized, prepared.size, prepared.crops[1:]
            else:
                resized, (h, w) = self._decode(data)
        except Exception as e:  # noqa: BLE001 - corrupt, truncated, unsupported or too large images
            return DecodedImage.failed(row_error("image_decode", exception_detail(e)), count)
        checked = prompts.check(h, w, self.processor.mask_size)
        decoded = DecodedImage(resized.tobytes(), [resized.shape[0], resized.shape[1]], image_size=[h, w],
                               box_errors=checked.reasons, num_boxes=count, prompt_kinds=prompts.kinds(),
                               everything=everything, crop_pixels=[c.resized.tobytes() for c in crops],
                               crop_hw=[[c.resized.shape[0], c.resized.shape[1]] for c in crops])
        self._add_prompts(decoded, checked.usable, (h, w))
        return decoded

    def _add_prompts(self, decoded: DecodedImage, prompts: List[Prompt], size: Tuple[int, int]) -> None:
        """The usable prompts, brought into the model's frame, as the row's."""
        boxes = np.array([np.full(4, np.nan) if p.box is None else p.box for p in prompts]).reshape(-1, 4)
        decoded.boxes = self.processor.scale_boxes(boxes, size).reshape(-1).tolist()  # NaN: no box
        for prompt in prompts:
            points = prompt.points
            decoded.points.append(self.processor.scale_coords(points, size).reshape(-1).tolist() if len(points) else [])
            decoded.point_labels.append(prompt.labels.tolist())
            logits = self.processor.mask_prompt_logits(prompt.mask) if prompt.mask is not None else prompt.logits
            decoded.mask_inputs.append(None if logits is None else logits.astype("<f4").tobytes())

    def _decode(self, data: bytes) -> Tuple[np.ndarray, Tuple[int, int]]:
        """The image resized for the model, and its size as shown."""
        with self._open(data) as image:
            return self.processor.resize_image(image, draft=self.inputs.jpeg_draft)

    def _decode_crops(self, data: bytes) -> PreparedImage:
        """The image's segment-everything crops, the whole image first, each resized for the
        model from the full-resolution image (never a JPEG draft: the crops need its pixels)."""
        with self._open(data) as image:
            return prepare_image(image, self.processor, self.everything.crop_n_layers,
                                 self.everything.crop_overlap_ratio)

    def _open(self, data: bytes) -> Image.Image:
        """The encoded image opened (not yet decoded); ValueError above input.max_image_pixels."""
        limit = f"input.max_image_pixels ({self.inputs.max_image_pixels / 1e6:.1f} MP)"
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:  # Pillow refuses above twice its limit, from the header
            raise ValueError(f"the image is larger than {limit}: {e}") from None
        width, height = image.size
        if width * height > self.inputs.max_image_pixels:
            image.close()
            raise ValueError(f"the image is {width} x {height} = {width * height / 1e6:.1f} MP, more than {limit}")
        return image

    def _image_bytes(self, batch: pa.Table, i: int) -> bytes:
        column = self.inputs.image_source_column
        return self._reader.image_bytes(batch.column(column)[i].as_py(), column)


def decode_task_memory(inputs: ImageColumnsConfig, everything: EverythingConfig, batch_size: int,
                       image_size: int) -> int:
    """Bytes the job's decode tasks of `batch_size` rows reserve, for images resized to
    `image_size`, with segment-everything's crops when it is on."""
    crops = everything.crops_per_image - 1 if everything.enabled else 0
    return decode_memory(batch_size, inputs.max_image_pixels, crops, image_size)


def decode_memory(batch_size: int, max_image_pixels: int = _MEASURED_PIXELS, crops_per_image: int = 0,
                  image_size: int = 1024) -> int:
    """Bytes a decode task of `batch_size` images, each at most `max_image_pixels` and cut into
    `crops_per_image` crops besides the whole image (segment-everything), reserves."""
    extra = max(0, max_image_pixels - _MEASURED_PIXELS) * _BYTES_PER_EXTRA_PIXEL
    # Each crop resized (image_size² RGB at most) is held as an array and as the row's bytes.
    crops = batch_size * crops_per_image * 2 * 3 * image_size * image_size
    if crops_per_image:  # the full-resolution image the crops are cut from, with its RGB copy
        extra += 2 * 3 * max_image_pixels
    return _DECODE_WORKER_BYTES + batch_size * _DECODE_BYTES_PER_IMAGE + extra + crops
