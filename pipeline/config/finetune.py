"""The fine-tuning config (`python -m pipeline finetune --config finetune.yaml`): the labelled
data, the checkpoint to start from and where the result goes, the optimisation, storage
(`configs/finetune.schema.json`)."""

from typing import Any, ClassVar, List, Literal, Mapping, Optional

from pydantic import Field

from ..schema import GROUND_TRUTH_MASKS
from .base import Section, Sections
from .shared import HUB_CREDENTIALS, ImageSourceConfig, StorageConfig


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


# What fine-tuning trains: the HQ parameters (the paper's recipe) or every parameter of the
# mask decoder (samhq_core.training.recipe's "hq" and "decoder" phases); the first is the default.
Trainable = Literal["hq", "decoder"]


class TrainingConfig(Section):
    section: ClassVar[str] = "training"
    trainable: Trainable = Field("hq", description="What trains: hq, the HQ parameters alone (HQ token, its MLP, "
                                                   "compress_vit_feat, embedding_encoder, embedding_maskfeature), as "
                                                   "the SAM-HQ paper does; or decoder, every mask-decoder parameter "
                                                   "(SAM's own output then changes too). The image and prompt encoders "
                                                   "stay frozen.")
    steps: int = Field(1000, ge=1, description="Optimizer steps.")
    batch_size: int = Field(4, ge=1, description="Images per step, on each worker: a step of N workers takes N x "
                                                 "batch_size images.")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate, after a linear warm-up, with cosine decay.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(100, ge=0, description="Steps of linear warm-up.")
    seed: int = Field(0, description="Seed of the initialisation and the shuffling.")
    log_every: int = Field(50, ge=1, description="Steps between log lines.")
    torch_threads: Optional[int] = Field(None, ge=1, description="Intra-op threads on CPU; with training.workers of 2 "
                                                                 "or more, the CPUs each worker reserves (default 1).")
    workers: int = Field(1, ge=1, description="Training processes. 1: this process alone. 2 or more: Ray Train "
                                              "workers with data-parallel (DDP) gradients, on the Ray cluster in "
                                              "RAY_ADDRESS or a new local one, reading data.train through Ray Data, "
                                              "with training checkpoints under model.output/_training/ that a rerun "
                                              "resumes from.")
    use_gpu: Optional[bool] = Field(None, description="Train on GPUs (one per worker); default: when there are enough "
                                                      "(CUDA here for training.workers: 1, the cluster's GPUs "
                                                      "otherwise).")
    checkpoint_every: int = Field(100, ge=1, description="Steps between training checkpoints (training.workers of 2 or "
                                                         "more): the trained parameters, optimizer, schedule and step, "
                                                         "from which a restarted worker group or a rerun goes on.")
    max_failures: int = Field(1, ge=0, description="Worker failures (a crashed or killed worker, a lost node) from which "
                                                   "a Ray Train run restarts its workers at the latest training "
                                                   "checkpoint before it gives up.")


class FinetuneConfig(Sections):
    data: DataConfig = Field(description="The labelled images: images, boxes and masks.")
    model: FinetuneModelConfig = Field(description="The checkpoint to start from and where the result goes.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="The optimisation.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Object-store settings.")

