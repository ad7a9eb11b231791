"""HQ fine-tuning on your own labelled data: `python -m pipeline finetune --config finetune.yaml`.

Trains only the HQ parameters of a SAM-HQ checkpoint (the paper's recipe: HQ token, its MLP,
compress_vit_feat, embedding_encoder, embedding_maskfeature; everything else frozen) on a
Parquet of images, boxes and ground-truth masks, local or on object storage, and saves an
HF-layout checkpoint that the pipeline loads. Before and after training it reports mIoU and
boundary IoU (`pipeline.evaluation`'s definitions) on a validation split, for the HQ-token
output that it trains, for the SAM + HQ output, and for SAM alone as the baseline.

Data (the pipeline's input columns plus the evaluation ground truth's `masks`): per row an
id, the image (encoded bytes or a URI), its boxes, and per box a COCO RLE mask of the
original image size (null: not annotated). Rows are decoded exactly as the pipeline decodes
them. A row that cannot be used (undecodable image, bad boxes, masks not aligned with the
boxes or of another size) is skipped and counted by reason in the report, never silently.

It reuses the job's config parsing, checks, decoding and metrics, so that training sees what
inference sees; the training loop itself is samhq_core's (`samhq_core.training.recipe`).
"""

import json
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field

from samhq_core import SamHQModel, SamHQProcessor
from samhq_core.training.recipe import Batch, set_trainable, train_phase

from . import rle
from .config import HUB_CREDENTIALS, ImageSourceConfig, Section, Sections, StorageConfig
from .evaluation import mask_scores
from .ids import stable_hash
from .preflight import plan_finetune
from .schema import BOX_ERRORS, BOXES, ERROR, GROUND_TRUTH_MASKS, IMAGE_SIZE, PIXELS, RESIZED_HW, error_kind
from .stages import DecodeUDF
from .storage import ParquetInput, filesystem, open_for_write, storage_options

# The mask sources of one checkpoint, as SamHQModel.forward keyword arguments: SAM alone (the
# baseline), the HQ token alone, SAM's mask plus the HQ term (the official default).
SOURCES = {"sam_only": {"sam_only": True}, "hq_token_only": {"hq_token_only": True}, "sam_plus_hq": {}}


class DataConfig(ImageSourceConfig):
    section: ClassVar[str] = "data"
    train: str = Field(description="Training Parquet: file, directory or glob; local path or any fsspec URL.")
    masks_column: str = Field(GROUND_TRUTH_MASKS, description="Column with a COCO RLE mask per box, aligned with the "
                                                              "boxes; a null mask is not annotated.")
    validation: Optional[str] = Field(None, description="A separate validation Parquet; default: hold out "
                                                        "validation_fraction of the training rows.")
    validation_fraction: float = Field(0.1, description="Share of the training rows held out for validation, chosen "
                                                        "by a hash of the id (the same across runs).")
    max_validation_rows: int = Field(200, ge=1, description="Validation rows evaluated (held in memory as compressed "
                                                            "RLE).")
    shuffle_buffer: int = Field(256, ge=1, description="Training rows shuffled together.")

    @classmethod
    def cross_checks(cls, values: Mapping[str, Any]) -> List[str]:
        problems = super().cross_checks(values)
        fraction = values.get("validation_fraction", 0.1)
        if values.get("validation") is None and isinstance(fraction, (int, float)) and not 0 < fraction < 1:
            problems.append("data.validation_fraction: must be in (0, 1) when data.validation is not given")
        return problems


class FinetuneModelConfig(Section):
    section: ClassVar[str] = "model"
    credentials_from: ClassVar[Optional[str]] = HUB_CREDENTIALS
    checkpoint: str = Field(description="The checkpoint to start from: .pth or HF-layout directory, path or URL, or a "
                                        "Hugging Face Hub model id org/name[@revision].")
    output: str = Field(description="New directory for the fine-tuned HF-layout checkpoint; local path or fsspec URL.")
    variant: Optional[str] = Field(None, description="The checkpoint's variant; inferred from its tensor shapes when "
                                                     "omitted.")


class TrainingConfig(Section):
    section: ClassVar[str] = "training"
    steps: int = Field(1000, ge=1, description="Optimizer steps.")
    batch_size: int = Field(4, ge=1, description="Images per step.")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate, after a linear warm-up, with cosine decay.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(100, ge=0, description="Steps of linear warm-up.")
    seed: int = Field(0, description="Seed of the initialisation and the shuffling.")
    log_every: int = Field(50, ge=1, description="Steps between log lines.")
    torch_threads: Optional[int] = Field(None, ge=1, description="Intra-op threads on CPU.")


class FinetuneConfig(Sections):
    data: DataConfig = Field(description="The labelled images: images, boxes and masks.")
    model: FinetuneModelConfig = Field(description="The checkpoint to start from and where the result goes.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="The optimisation.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object-store settings.")


def parse_finetune_config(data: Mapping[str, Any]) -> FinetuneConfig:
    """Build a FinetuneConfig from plain data, collecting every problem into one ConfigError."""
    return FinetuneConfig.parse(data)


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
        self.input = ParquetInput(url, storage, "data")
        self.decode = DecodeUDF(data, storage, self.processor.image_size, keep_image=False)
        self.skipped: Counter = Counter()  # reason -> rows (or boxes) not used
        self.columns = [data.id_column, data.boxes_column, data.masks_column, data.image_source_column]

    def examples(self, split: Optional[str]) -> Iterator[Example]:
        """One pass over the usable rows; split "train" / "validation" keeps that side of the
        id-hash hold-out, None keeps every row."""
        for record_batch in self.input.batches(self.columns, batch_rows=16):
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


@torch.inference_mode()
def evaluate(model: SamHQModel, examples: List[Example]) -> Dict[str, Dict[str, float]]:
    """mIoU and mBIoU per mask source over the examples' boxes (masks at the original size)."""
    model.eval()
    processor = SamHQProcessor.for_model(model)
    scores: Dict[str, List[Tuple[float, float]]] = {name: [] for name in SOURCES}
    for e in examples:
        embeddings, early = model.get_image_embeddings(e.pixels[None].to(model.device))
        truth = [rle.decode(t, "validation", "mask") for t in e.truth]
        for name, source in SOURCES.items():
            out = model(image_embeddings=embeddings, intermediate_embeddings=early,
                        input_boxes=e.boxes[None].to(model.device), multimask_output=False, **source)
            masks = torch.cat(list(processor.masks_at_original_size(out.pred_masks[0, :, 0], e.resized_hw,
                                                                    e.original_hw))).cpu().numpy()
            scores[name] += [mask_scores(t, m) for t, m in zip(truth, masks, strict=True)]
    results = {}
    for name, pairs in scores.items():
        iou, biou = np.array(pairs).reshape(-1, 2).mean(0) if pairs else (float("nan"), float("nan"))
        results[name] = {"miou": float(iou), "mbiou": float(biou), "boxes": len(pairs)}
    return results


def save_checkpoint(model: SamHQModel, url: str, storage: StorageConfig) -> None:
    """save_pretrained to a local directory or, through a temporary one, to an fsspec URL."""
    if "://" not in url or url.startswith("file://"):
        model.save_pretrained(url.removeprefix("file://"))
        return
    fs, path = filesystem(url, storage)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        for name in os.listdir(tmp):
            fs.put_file(os.path.join(tmp, name), f"{path.rstrip('/')}/{name}")


def report(before: Dict[str, Dict[str, float]], after: Dict[str, Dict[str, float]], skipped: Counter,
           config: FinetuneConfig, seconds: float, trainable: int) -> str:
    lines = ["# HQ fine-tuning", "", f"Checkpoint `{config.model.checkpoint}` → `{config.model.output}`; "
             f"{config.training.steps} steps of {config.training.batch_size} images, {trainable:,} trainable "
             f"(HQ) parameters, {seconds / 60:.1f} min.", "",
             "| mask source | boxes | mIoU before | mIoU after | mBIoU before | mBIoU after |", "|---|---|---|---|---|---|"]
    for name in SOURCES:
        b, a = before[name], after[name]
        lines.append(f"| {name} | {a['boxes']} | {b['miou']:.4f} | {a['miou']:.4f} | {b['mbiou']:.4f} | {a['mbiou']:.4f} |")
    lines += ["", "sam_only is unchanged by design (only HQ parameters train): it is the baseline."]
    if skipped:
        lines += ["", "| skipped (all passes over the data) | count |", "|---|---|"]
        lines += [f"| {reason} | {count} |" for reason, count in sorted(skipped.items())]
    return "\n".join(lines) + "\n"


def finetune(config: FinetuneConfig, log: Callable[[str], None] = print, relative_to: Optional[str] = None) -> str:
    """Run a fine-tuning job; returns the Markdown report (also written next to the checkpoint).

    The checks of `pipeline.preflight.plan_finetune` run first: ConfigError, before anything
    is loaded or written, for every problem they find."""
    config, _ = plan_finetune(config, relative_to)
    t = config.training
    torch.manual_seed(t.seed)
    if t.torch_threads:
        torch.set_num_threads(t.torch_threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = SamHQModel.from_pretrained(config.model.checkpoint, variant=config.model.variant,
                                       storage_options=storage_options(config.storage)).to(device)
    trainable = sum(p.numel() for p in set_trainable(model, "hq"))
    train_source = LabelledImages(config.data.train, config.data, config.storage, model)
    if config.data.validation:
        validation_source, train_split, validation_split = (
            LabelledImages(config.data.validation, config.data, config.storage, model), None, None)
    else:
        validation_source, train_split, validation_split = train_source, "train", "validation"
    validation = []
    for example in validation_source.examples(validation_split):
        validation.append(example)
        if len(validation) == config.data.max_validation_rows:
            break
    if not validation:
        raise ValueError("no usable validation rows: give data.validation or more data "
                         f"(skipped: {dict(validation_source.skipped)})")
    log(f"validation: {len(validation)} images, {sum(len(e.boxes) for e in validation)} boxes")
    before = evaluate(model, validation)
    log(f"before: {json.dumps(before)}")
    start = time.perf_counter()
    batches = training_batches(train_source, train_split, t.batch_size, config.data.shuffle_buffer, t.seed, device)
    train_phase(model, "hq", batches, t.steps, t.lr, weight_decay=t.weight_decay, warmup_steps=t.warmup_steps,
                log_every=t.log_every, log=log)
    seconds = time.perf_counter() - start
    after = evaluate(model, validation)
    log(f"after: {json.dumps(after)}")
    save_checkpoint(model.cpu(), config.model.output, config.storage)
    skipped = train_source.skipped + (validation_source.skipped if validation_source is not train_source else Counter())
    text = report(before, after, skipped, config, seconds, trainable)
    with open_for_write(f"{config.model.output.rstrip('/')}/finetune_report.md", config.storage) as f:
        f.write(text.encode("utf-8"))
    return text
