"""Every config the package reads, as typed sections (pydantic), each problem reported at once
as `section.key: what is wrong`: the job's (`job`, and its segment-everything section,
`everything`), fine-tuning's (`finetune`), the sections both take (`shared`), the machinery
(`base`, `errors`) and the YAML files they come from (`yaml_source`)."""

from .base import Section, Sections
from .errors import ConfigError
from .everything import EverythingConfig
from .finetune import DataConfig, FinetuneConfig, FinetuneModelConfig, TrainingConfig
from .job import (
    DEMO_WORKDIR,
    ComputeConfig,
    InputConfig,
    JobConfig,
    ModelConfig,
    OutputConfig,
    load_config,
    parse_config,
)
from .shared import HUB_CREDENTIALS, ImageColumnsConfig, ImageSourceConfig, PromptColumns, StorageConfig
from .yaml_source import apply_overrides, read_yaml

__all__ = ["DEMO_WORKDIR", "HUB_CREDENTIALS", "ComputeConfig", "ConfigError", "DataConfig", "EverythingConfig", "FinetuneConfig",
           "FinetuneModelConfig", "ImageColumnsConfig", "ImageSourceConfig", "InputConfig", "JobConfig", "ModelConfig",
           "OutputConfig", "PromptColumns", "Section", "Sections", "StorageConfig", "TrainingConfig",
           "apply_overrides", "load_config", "parse_config", "read_yaml"]
