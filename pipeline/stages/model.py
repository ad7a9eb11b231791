"""The model stage (actors): one SAM-HQ replica each. Runs the image encoder on the batch's
images, the HQ decoder on all usable boxes of all of them (in bounded chunks), and upsamples,
thresholds, scores the stability of and run-length-codes the masks on the actor's device,
so that only run boundaries, scores, areas and boxes leave it. Rows segment-everything runs on
(`everything`) go through the automatic mask generator, all of a batch's crops together.

With `compute.concurrent_batches_per_actor` above 1, Ray Data calls an actor's UDF from that
many threads at once; each thread has a CUDA stream of its own, so that one batch's copies,
mask post-processing and run-length coding overlap another's model call on the GPU. The model
calls take turns under a lock: torch.compile'd functions (the compiled model, FlexAttention's
kernel) are not thread-safe, and one model call at a time bounds the device memory."""

import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, List, Optional, Sequence, Tuple

import pyarrow as pa
import torch
from ray.data import ActorPoolStrategy

from samhq_core import MaskSource, SamHQModel, SamHQProcessor
from samhq_core.processor import pad_to_bucket, stability_scores

from ..config import ComputeConfig, EverythingConfig, ModelConfig, StorageConfig
from ..masks import rle
from ..schema import (
    BOX_ERRORS,
    BOXES,
    CROP_HW,
    CROP_PIXELS,
    EVERYTHING,
    IMAGE_SIZE,
    MASK_INPUTS,
    PIXELS,
    POINT_LABELS,
    POINTS,
    PROMPT_KINDS,
    RESIZED_HW,
    exception_detail,
    row_error,
)
from ..storage import s3_options
from ..text import plural
from .contract import Stage, StageUDF
from .everything import EverythingMasks, add_records
from .mask_result import MaskResult
from .prompt_groups import ImagePrompts, prompt_groups
from .run_lengths import RunLengthCoder


@dataclass
class _Image:
    """A decoded row as the model stage reads it."""

    pixels: bytes
    resized_hw: Tuple[int, int]
    original_hw: Tuple[int, int]
    prompts: ImagePrompts  # the usable prompts, in the model's frame
    box_errors: List[Optional[str]]  # per input prompt
    prompt_kinds: List[str]  # per input prompt, its found_by value
    everything: bool  # whether segment-everything runs on the row
    crop_pixels: List[bytes]  # its crops after the whole image, resized
    crop_hw: List[List[int]]
    # The whole image's embeddings once its prompts were decoded: segment-everything reuses them.
    embeddings: Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]] = None


_MASK_SOURCES = {MaskSource.SAM_PLUS_HQ: "SAM's mask plus the HQ term (as official)",
                 MaskSource.HQ_ONLY: "the HQ token's mask (model.mask_source: hq_only)",
                 MaskSource.SAM_ONLY: "SAM's mask only (model.mask_source: sam_only)"}
_CHECKPOINTS_SOURCE = "the mask source the checkpoint recommends"


class ModelUDF(StageUDF):
    """A model replica on the actor's device (CUDA when present)."""

    result_type = MaskResult

    def __init__(self, model: ModelConfig, storage: StorageConfig, image_size: int,
                 torch_threads: Optional[int] = None, batch_size: int = 1, concurrent_batches: int = 1,
                 everything: Optional[EverythingConfig] = None) -> None:
        self.batch_size, self.concurrent_batches = batch_size, concurrent_batches
        self._model_turn = threading.Lock()
        self._thread_state = threading.local()
        self.config = model
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.model = SamHQModel.from_pretrained(
            model.checkpoint, variant=model.variant, sha256=model.sha256, storage_options=s3_options(storage)
        ).to(self.device)
        if self.device.type == "cuda":  # the weights' copies finish before another thread's stream reads them
            torch.cuda.synchronize(self.device)
        self.processor = SamHQProcessor.for_model(self.model)
        self.mask_source = model.mask_source or self.model.config.default_mask_source
        # Masks kept per prompt: the candidates of multimask_keep: all (sorted best first), else the first.
        candidates = self.model.config.mask_decoder_config.num_multimask_outputs
        self.masks_per_prompt = candidates if model.keeps_candidates(self.mask_source) else 1
        self.encode: Callable[..., Tuple[torch.Tensor, torch.Tensor]] = self.model.get_image_embeddings
        self.decode: Callable[..., Tuple[torch.Tensor, torch.Tensor]] = self.model.decode_flat
        if model.compile:
            # The decoder compiles a graph per power of two of the boxes in a batch (pad_to_bucket):
            # more than dynamo's default limit of 8. The limit's name changed in torch 2.7.
            dynamo = torch._dynamo.config
            limit = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
            setattr(dynamo, limit, max(getattr(dynamo, limit), 64))
            self.encode = torch.compile(self.model.get_image_embeddings, fullgraph=True, dynamic=False)
            self.decode = torch.compile(self.model.decode_flat, fullgraph=True, dynamic=False)
        if self.processor.image_size != image_size:  # the decode tasks resized every image for `image_size`
            raise ValueError(f"{model.checkpoint} loaded a model of input size {self.processor.image_size}, but the "
                             f"job resizes images for {image_size}: did the checkpoint change after the job's checks?")
        # The generator runs the model uncompiled: its crops and point batches vary too much.
        self.everything = (EverythingMasks(self.model, self.processor, everything, self.mask_source, batch_size)
                           if everything is not None and everything.enabled else None)

    @classmethod
    def stage(cls, model: ModelConfig, storage: StorageConfig, compute: ComputeConfig, num_cpus: float,
              num_gpus: float, image_size: int, model_name: str, everything: Optional[EverythingConfig] = None
              ) -> Stage:
        """The actor pool of `compute.num_actors` replicas, each reserving `num_cpus` CPUs and
        `num_gpus` GPUs (`model_name` describes the model), running segment-everything on the
        rows the decode stage marks, with `everything`'s parameters."""
        device = "GPU" if num_gpus > 0 else "CPU"
        actors = plural(compute.num_actors, "actor")
        if compute.concurrent_batches_per_actor > 1:
            actors += f" ({compute.concurrent_batches_per_actor} batches at once each)"
        multimask = f", multimask_keep: {model.multimask_keep}" if model.multimask_output else ""
        if everything is not None and everything.enabled:
            multimask += (f"; segment-everything on rows {everything.rows.replace('_', ' ')}: "
                          f"{everything.points_per_side}² points, {everything.crop_n_layers} crop layers")
        return Stage(
            name="model",
            udf=cls,
            constructor_kwargs=dict(model=model, storage=storage, image_size=image_size,
                                    torch_threads=compute.torch_threads, batch_size=compute.batch_size,
                                    concurrent_batches=compute.concurrent_batches_per_actor,
                                    everything=everything),
            map_batches_kwargs=dict(
                batch_format="pyarrow",
                batch_size=compute.batch_size,
                num_gpus=num_gpus,
                num_cpus=num_cpus,
                # On CPU the actors share cores with the decode and encode tasks; spinning OpenMP
                # threads would burn the time slices those need (bench/results/cpu_pipeline.md).
                runtime_env={"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}},
            ),
            description=f"{actors} ({num_cpus:g} CPU, {num_gpus:g} GPU each) on {device}: "
                        f"{model_name}, batches of {compute.batch_size}, {model.dtype}, "
                        f"{_MASK_SOURCES[model.mask_source] if model.mask_source else _CHECKPOINTS_SOURCE}{multimask}",
            required_columns=(PIXELS, RESIZED_HW, BOXES, POINTS, POINT_LABELS, MASK_INPUTS, PROMPT_KINDS, EVERYTHING,
                              CROP_PIXELS, CROP_HW, IMAGE_SIZE, BOX_ERRORS),
            dropped_columns=(PIXELS, BOXES, POINTS, POINT_LABELS, MASK_INPUTS, PROMPT_KINDS, EVERYTHING, CROP_PIXELS,
                             CROP_HW),
            actors=actor_pool(compute),
        )

    def process(self, batch: pa.Table) -> List[MaskResult]:
        with self._stream():
            return self._process(batch)

    def _stream(self) -> ContextManager[Any]:
        """This thread's own CUDA stream, when batches run concurrently on a GPU."""
        if self.device.type != "cuda" or self.concurrent_batches == 1:
            return contextlib.nullcontext()
        if not hasattr(self._thread_state, "stream"):
            self._thread_state.stream = torch.cuda.Stream(self.device)
        return torch.cuda.stream(self._thread_state.stream)

    def _process(self, batch: pa.Table) -> List[MaskResult]:
        images = [self._image(batch, i) for i in range(batch.num_rows)]
        results: List[Optional[MaskResult]] = [None] * len(images)
        for i, image in enumerate(images):
            if not len(image.prompts):
                results[i] = self._masks(image, None)
        todo = [i for i, image in enumerate(images) if len(image.prompts)]
        decoded = None
        if todo:
            try:
                decoded = self._decode([images[i] for i in todo])
            except Exception:  # noqa: BLE001 - isolate the failing image below, one at a time
                decoded = None
        for k, i in enumerate(todo):
            try:
                results[i] = self._masks(images[i], decoded[k] if decoded else self._decode([images[i]])[0])
            except Exception as e:  # noqa: BLE001 - a bad row never kills the job
                results[i] = MaskResult(error=row_error("model", exception_detail(e)))
        self._add_everything(images, results)
        return [r if r is not None else MaskResult() for r in results]

    def _add_everything(self, images: List[_Image], results: List[Optional[MaskResult]]) -> None:
        """Segment-everything's masks added to the results of the rows it runs on: all their
        crops at once, else (when that fails) one row at a time, a failing row getting its error."""
        failed = {i for i, result in enumerate(results) if result is not None and result.error}
        todo = [i for i, image in enumerate(images) if image.everything and i not in failed]
        if not todo:
            return
        if self.everything is None:
            raise ValueError("the decode stage marked rows for segment-everything, which this actor was not built for")
        found = None
        try:
            found = self._generate([images[i] for i in todo])
        except Exception:  # noqa: BLE001 - isolate the failing image below, one at a time
            found = None
        for k, i in enumerate(todo):
            result = results[i] or MaskResult()
            try:
                add_records(result, found[k] if found else self._generate([images[i]])[0])
            except Exception as e:  # noqa: BLE001 - a bad row never kills the job
                result = MaskResult(error=row_error("model", exception_detail(e)))
            results[i] = result

    @torch.inference_mode()
    def _generate(self, images: Sequence[_Image]) -> List[List[Any]]:
        assert self.everything is not None
        prepared = [self.everything.prepared(image.pixels, image.resized_hw, image.original_hw, image.crop_pixels,
                                             image.crop_hw, image.embeddings) for image in images]
        with self._autocast(), self._model_turn:
            return self.everything.generate(prepared)

    def _image(self, batch: pa.Table, i: int) -> _Image:
        h, w = batch.column(IMAGE_SIZE)[i].as_py()
        rh, rw = batch.column(RESIZED_HW)[i].as_py()
        prompts = ImagePrompts.from_row(batch, i, self.processor.mask_size)
        return _Image(batch.column(PIXELS)[i].as_py(), (rh, rw), (h, w), prompts, batch.column(BOX_ERRORS)[i].as_py(),
                      batch.column(PROMPT_KINDS)[i].as_py(), bool(batch.column(EVERYTHING)[i].as_py()),
                      batch.column(CROP_PIXELS)[i].as_py(), batch.column(CROP_HW)[i].as_py())

    def _autocast(self) -> ContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.dtype == "bfloat16")

    @torch.inference_mode()
    def _embed_images(self, images: Sequence[_Image]) -> Tuple[torch.Tensor, torch.Tensor]:
        pixels = []
        for image in images:
            resized = torch.frombuffer(bytearray(image.pixels), dtype=torch.uint8).view(*image.resized_hw, 3)
            pixels.append(self.processor.model_input(self._to_device(resized)))
        batch = torch.stack(pixels)
        if self.config.compile:
            # Every batch padded to the job's batch size: one encoder graph, and the decoder's
            # graphs keyed on the prompts alone (the images without a usable prompt vary).
            batch = pad_to_bucket(batch, dim=0, at_least=self.batch_size)
        with self._autocast(), self._model_turn:
            # Padded rows stay: the decoder's graph is then keyed on the padded count too.
            return self.encode(batch)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """On a GPU, through pinned memory, so that the copy runs asynchronously."""
        if self.device.type == "cuda":
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def _decode(self, images: Sequence[_Image]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per image (all with usable prompts) its low-res mask logits (n, k, s, s) and predicted
        IoUs (n, k) for its n prompts, k = `masks_per_prompt`, on the device: the prompts of
        all images decoded together, one call per form of prompt (`prompt_groups`), each
        `box_chunk_size` at a time."""
        embeddings, intermediate = self._embed_images(images)
        for i, row in enumerate(images):
            if row.everything:
                row.embeddings = (embeddings[i], None if intermediate is None else intermediate[i])
        k = self.masks_per_prompt
        pieces: List[List[Tuple[List[int], torch.Tensor, torch.Tensor]]] = [[] for _ in images]
        for group in prompt_groups([image.prompts for image in images]):
            parts = [group.image_index, group.boxes, group.masks, *(group.points or ())]
            if self.config.compile:
                parts = [None if part is None else pad_to_bucket(part, dim=0) for part in parts]
            image_index, boxes, masks, *points = [None if part is None else self._to_device(part) for part in parts]
            with self._autocast(), self._model_turn:
                logits, scores = self.decode(
                    embeddings, intermediate, image_index, points=tuple(points) if points else None, boxes=boxes,
                    masks=masks, multimask_output=self.config.multimask_output, mask_source=self.mask_source,
                    prompt_chunk_size=self.config.box_chunk_size,
                )
            start = 0  # a group holds each image's prompts of its form together; the padding's rows are left out
            for image, prompts in group.by_image():
                end = start + len(prompts)
                pieces[image].append((prompts, logits[start:end, :k], scores[start:end, :k]))
                start = end
        return [self._in_prompt_order(image_pieces) for image_pieces in pieces]

    def _in_prompt_order(self, pieces: List[Tuple[List[int], torch.Tensor, torch.Tensor]]
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One image's logits and scores from the groups' pieces (its prompts' indices, their
        logits and scores), in the order of its prompts: as they are when one group held them."""
        if len(pieces) == 1:
            return pieces[0][1], pieces[0][2]
        prompts = [j for piece in pieces for j in piece[0]]
        order = self._to_device(torch.tensor(sorted(range(len(prompts)), key=prompts.__getitem__)))
        return torch.cat([piece[1] for piece in pieces])[order], torch.cat([piece[2] for piece in pieces])[order]

    @torch.inference_mode()
    def _masks(self, image: _Image, decoded: Optional[Tuple[torch.Tensor, torch.Tensor]]) -> MaskResult:
        """One image's result row from its decoded logits and scores (None: no usable prompt)."""
        h, w = image.original_hw
        coder, iou_scores, stability = RunLengthCoder(h, w), torch.zeros(0), []
        if decoded is not None:
            low_res, iou_scores = decoded[0].flatten(0, 1), decoded[1].flatten()
            threshold = self.config.mask_threshold
            for logits in self.processor.masks_at_original_size(low_res, image.resized_hw, image.original_hw,
                                                                threshold, binarize=False):
                coder.add(logits > threshold)
                stability.append(stability_scores(logits, threshold))
        stats = coder.finish(iou_scores, torch.cat(stability) if stability else torch.zeros(0))
        scores, stabilities = stats.values
        counts, areas, boxes_xywh = stats.counts, stats.areas, stats.boxes
        # Prompts that could not be used get empty masks, NaN scores, zero areas and boxes.
        result, k = MaskResult(), 0
        for prompt, (reason, kind) in enumerate(zip(image.box_errors, image.prompt_kinds, strict=True)):
            for _ in range(self.masks_per_prompt):
                if reason is None:
                    result.add(counts[k], float(scores[k]), float(stabilities[k]), int(areas[k]),
                               boxes_xywh[k].tolist(), prompt, kind)
                    k += 1
                else:
                    result.add(rle.empty_run_lengths(h, w), float("nan"), float("nan"), 0, [0.0, 0.0, 0.0, 0.0], prompt,
                               kind)
        return result


def actor_pool(compute: ComputeConfig) -> ActorPoolStrategy:
    """The model actors' pool: `compute.num_actors` of them, each running up to
    `compute.concurrent_batches_per_actor` calls of the UDF at once in threads of its own."""
    concurrent = compute.concurrent_batches_per_actor
    if concurrent == 1:
        return ActorPoolStrategy(size=compute.num_actors)
    return ActorPoolStrategy(size=compute.num_actors, max_concurrent_calls_per_actor=concurrent,
                             enable_true_multi_threading=True)
