"""The job's config (`python -m pipeline run --config job.yaml`): input, output, model,
compute and storage sections. Reachability of the input, checkpoint and output is checked
separately (`pipeline.checks`, `pipeline.job.plan`), since it needs the network. Every key
carries a description, which `python -m pipeline schema` turns into a JSON Schema for editors
(`configs/job.schema.json`)."""

from typing import Any, ClassVar, List, Literal, Mapping, Optional, Union, get_args

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from samhq_core import MaskSource
from samhq_core.config import PROMPT_CHUNK_SIZE_ACCELERATOR, PROMPT_CHUNK_SIZE_CPU, VARIANTS

from ..schema import RESULT_COLUMNS
from ..text import clipped
from .base import Section, Sections
from .everything import EverythingConfig
from .shared import HUB_CREDENTIALS, ImageColumnsConfig, PromptColumns, StorageConfig

OutputMode = Literal["error", "overwrite", "resume"]  # the first is the default
# Where `python -m pipeline demo` writes its data by default, which the example configs read.
DEMO_WORKDIR = "demo_output"
OnBadFile = Literal["fail", "skip"]
DType = Literal["float32", "bfloat16"]
MultimaskKeep = Literal["best", "all"]  # the first is the default
_PROMPT_KEYS = ("boxes_column", "points_column", "mask_prompts_column")


class InputConfig(ImageColumnsConfig):
    section: ClassVar[str] = "input"
    path: str = Field(description="Parquet file, directory (read recursively) or glob; local path or any fsspec URL "
                                  "(hf://datasets/org/name/... for a Hugging Face Hub dataset).")
    boxes_column: Optional[str] = Field(
        None, description="Column with a list of boxes per row, one per prompt (null: that prompt has no box), in "
                          "absolute pixels of the image as shown (EXIF orientation applied) and input.box_format. Set "
                          "this, points_column and/or mask_prompts_column: their lists hold one entry per prompt, "
                          "aligned, and a prompt may combine them.")
    points_column: Optional[str] = Field(
        None, description="Column with, per row, per prompt, a list of [x, y] points (list<list<list<number>>>), in "
                          "absolute pixels of the image as shown (EXIF orientation applied); null or empty: that "
                          "prompt has no points. A point outside the image makes its prompt unusable (box_errors).")
    point_labels_column: Optional[str] = Field(
        None, description="Column with, per prompt, one label per point of points_column (list<list<integer>>): 1 "
                          "foreground, 0 background. Default: every point is foreground.")
    mask_prompts_column: Optional[str] = Field(
        None, description="Column with, per prompt, a mask prompt or null. Either a COCO RLE {size: [h, w], counts} "
                          "at the size of the image as shown, given to SAM as low-res logits (+20 inside, -20 "
                          "outside, after the image's resize and padding: samhq_core's "
                          "SamHQProcessor.mask_prompt_logits); or low-res logits themselves, as binary: float32 "
                          "little-endian, S/4 x S/4 row-major (256 x 256 for a 1024 px model) in the model's frame, "
                          "as the official SamPredictor.predict returns them (low_res_masks[i].tobytes()).")
    passthrough_columns: List[str] = Field(default_factory=list, description="Input columns copied unchanged to the "
                                                                             "output.")
    category_column: Optional[str] = Field(None, description="Column with a category per prompt (names or integer "
                                                             "ids), copied to the output and used by export-coco.")
    num_blocks: Optional[int] = Field(None, ge=1, description="Blocks the input is cut into (each becomes one result "
                                                              "file and one checkpoint entry); default 4 per model "
                                                              "actor, more for large inputs: at most 1000 rows and "
                                                              "256 MiB of input per block.")
    on_bad_file: OnBadFile = Field("fail", description="An input file that is not readable Parquet or lacks a "
                                                       "configured column: fail (refuse to start) or skip it (listed, "
                                                       "with the reason, in the summary and the _SUCCESS manifest).")

    def prompt_columns(self) -> PromptColumns:
        return PromptColumns(self.section, self.box_format, self.boxes_column, self.points_column,
                             self.point_labels_column, self.mask_prompts_column)

    @classmethod
    def cross_checks(cls, values: Mapping[str, Any]) -> List[str]:
        problems = super().cross_checks(values)
        passthrough = values.get("passthrough_columns")
        if isinstance(passthrough, list):
            clashes = sorted(set(RESULT_COLUMNS) & {c for c in passthrough if isinstance(c, str)})
            if clashes:
                problems.append(f"input.passthrough_columns: {', '.join(clashes)} clash with output columns")
        if values.get("point_labels_column") is not None and values.get("points_column") is None:
            problems.append("input.point_labels_column: labels the points of input.points_column, which is not set")
        return problems


class OutputConfig(Section):
    section: ClassVar[str] = "output"
    path: str = Field(description="Directory for the result Parquet files; local path or any fsspec URL.")
    include_image_bytes: bool = Field(False, description="Copy the image bytes column into the output (with "
                                                         "input.image_column).")
    mode: OutputMode = Field(get_args(OutputMode)[0],
                             description="A non-empty path: error (refuse to start), overwrite (replace the files an "
                                         "earlier run wrote there, never any other file) or resume (continue an "
                                         "interrupted run: rows already written are not processed again).")
    checkpoint_path: Optional[str] = Field(None, description="Where Ray Data's checkpoint of written ids goes; default "
                                                             "<path>/_checkpoint (same storage settings).")
    keep_checkpoint: bool = Field(False, description="Keep the checkpoint after the job completes (default: removed).")
    default_category: Union[str, int] = Field(
        "object", description="The exports' category of masks the input gives none: every mask without "
                              "input.category_column, and segment-everything's masks. A name, or an integer id "
                              "where input.category_column holds integer ids.")


class ModelConfig(Section):
    section: ClassVar[str] = "model"
    credentials_from: ClassVar[Optional[str]] = HUB_CREDENTIALS
    checkpoint: str = Field(description="Official .pth or HF-layout directory (config.json + model.safetensors); "
                                        "local path, any fsspec URL, or a Hugging Face Hub model id org/name or "
                                        "org/name@revision (when no such local path exists), downloaded into each "
                                        "node's Hugging Face cache (HF_HOME; HF_HUB_OFFLINE, HF_TOKEN from the "
                                        "environment).")
    variant: Optional[str] = Field(None, description=f"One of {', '.join(VARIANTS)}; inferred from the checkpoint's "
                                                     "tensor shapes when omitted.")
    sha256: Optional[str] = Field(None, description="Expected hex digest of the weights file, checked before loading.")
    # Not strict: YAML gives the value as a string.
    mask_source: Optional[MaskSource] = Field(
        None, strict=False, description="sam_plus_hq: SAM's mask plus the HQ term (the official output); hq_only: "
                                        "the HQ token's mask alone; sam_only: SAM's mask without HQ, the baseline to "
                                        "compare HQ against. Default: what the checkpoint's config.json recommends "
                                        "(its mask_source), else sam_plus_hq.")
    multimask_output: bool = Field(False, description="Decode 3 candidate masks per prompt (SAM's output for "
                                                      "ambiguous prompts, such as a single point) and keep what "
                                                      "model.multimask_keep says; false: SAM's single mask.")
    multimask_keep: MultimaskKeep = Field(
        get_args(MultimaskKeep)[0],
        description="With multimask_output: best keeps the candidate of highest predicted IoU (one mask per prompt, "
                    "as the official predictor's callers do); all keeps the 3, best first, one after the other in "
                    "the mask columns, with prompt_index naming each one's prompt (mask_source hq_only has one "
                    "candidate).")
    mask_threshold: float = Field(0.0, description="Threshold on the mask logits.")
    dtype: DType = Field("float32", description="float32, or bfloat16 autocast (the prompt encoder stays in fp32).")
    box_chunk_size: Optional[int] = Field(None, ge=1, description="Boxes decoded at once, from all images of a model "
                                                                  f"batch; default {PROMPT_CHUNK_SIZE_ACCELERATOR} on a "
                                                                  f"GPU, {PROMPT_CHUNK_SIZE_CPU} on CPU (samhq_core."
                                                                  "config.PROMPT_CHUNK_SIZE_*).")
    compile: bool = Field(False, description="torch.compile the encoder and the decoder once per actor (the first "
                                             "batches take minutes longer; image and box counts are padded to "
                                             "powers of two, so that new counts reuse a few compiled graphs).")

    def keeps_candidates(self, mask_source: MaskSource) -> bool:
        """Whether each prompt keeps all its candidate masks (multimask_keep: all) under
        `mask_source` (hq_only has one candidate)."""
        return self.multimask_output and self.multimask_keep == "all" and mask_source != MaskSource.HQ_ONLY

    @classmethod
    def cross_checks(cls, values: Mapping[str, Any]) -> List[str]:
        if values.get("multimask_keep") == "all" and values.get("multimask_output") is not True:
            return ["model.multimask_keep: all keeps the 3 candidates of model.multimask_output, which is not true"]
        return []

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and value not in VARIANTS:
            raise PydanticCustomError("variant", "must be one of {variants}, got {value}",
                                      {"variants": ", ".join(VARIANTS), "value": clipped(value)})
        return value


class ComputeConfig(Section):
    section: ClassVar[str] = "compute"
    num_actors: int = Field(1, ge=1, description="Model replicas (the actor pool's size).")
    num_gpus_per_actor: Optional[float] = Field(None, ge=0, description="GPUs per model actor, fractions allowed; "
                                                                        "default 1 when the cluster has GPUs, else 0.")
    num_cpus_per_actor: float = Field(1.0, ge=0, description="CPUs each model actor reserves.")
    torch_threads: Optional[int] = Field(None, ge=1, description="Intra-op threads per actor on CPU; default: Ray's "
                                                                 "(num_cpus_per_actor).")
    batch_size: int = Field(4, ge=1, description="Images per model call.")
    concurrent_batches_per_actor: int = Field(
        1, ge=1, le=8, description="Batches a model actor works on at once, each in a thread of its own (on a GPU "
                                   "with a CUDA stream of its own): one batch's model call runs while another's "
                                   "inputs are read and copied and its masks are run-length coded and copied back. "
                                   "The model calls themselves take turns. Device memory grows with it; on CPU "
                                   "leave it at 1 (the threads would share the actor's cores).")
    decode_batch_size: int = Field(8, ge=1, description="Images per CPU decode task.")
    encode_cpus: Optional[float] = Field(
        None, ge=0, description="CPUs each encode-and-write task reserves. Unset: 1 where at least 3 CPUs are left "
                                "beside the model actors (and a resumed run's checkpoint filter), else 0. Ray Data "
                                "reserves a task's CPU for the read and decode first: with fewer spare CPUs, 1-CPU "
                                "writes wait until every image is decoded (no result file, no checkpoint entry before "
                                "then, and the model's outputs pile up on the driver). 0 lets them run beside the "
                                "decode tasks: the job writes as it goes, at a cost in throughput on so small a "
                                "cluster (bench/results/scale_encode_cpus.md).")
    max_worker_crashes: int = Field(3, ge=2, description="Times a row may be in flight when its worker process dies "
                                                         "(a native crash, an out-of-memory kill) before it is written "
                                                         "with a 'stage' error instead of run again; after the first "
                                                         "death its batch runs one row at a time. Counted per node.")


class JobConfig(Sections):
    input: InputConfig = Field(description="Where the images and prompts are.")
    output: OutputConfig = Field(description="Where the results go.")
    model: ModelConfig = Field(description="The SAM-HQ checkpoint and how its masks are made.")
    everything: EverythingConfig = Field(default_factory=EverythingConfig,
                                         description="Segment-everything: which rows, with what parameters.")
    compute: ComputeConfig = Field(default_factory=ComputeConfig, description="Actors, GPUs, CPUs and batch sizes.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object-store settings.")

    @classmethod
    def cross_section_checks(cls, sections: Mapping[str, Section]) -> List[str]:
        inputs, everything = sections.get("input"), sections.get("everything")
        if not isinstance(inputs, InputConfig) or not isinstance(everything, EverythingConfig):
            return []
        if not inputs.prompt_columns().named() and not everything.enabled:
            return [f"input: set at least one prompt column ({', '.join(_PROMPT_KEYS)}), or everything.rows to run "
                    "segment-everything on rows without prompts"]
        return []


def load_config(path: str, overrides: Optional[List[str]] = None) -> JobConfig:
    """Read a YAML job config (`Sections.load`)."""
    return JobConfig.load(path, overrides)


def parse_config(data: Mapping[str, Any]) -> JobConfig:
    """Build a JobConfig from plain data (`Sections.parse`)."""
    return JobConfig.parse(data)
