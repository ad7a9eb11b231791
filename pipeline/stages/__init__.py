"""The job's stages: CPU decode → SAM-HQ model actors → CPU RLE encode, each a typed result and
a UDF under the contract of `contract` (after Ray's own batch-inference stages); the model
stage's masks are run-length coded on its device (`run_lengths`), segment-everything runs on
its actors too (`everything`), and worker deaths are
counted per row (`crash_guard`). The Ray cluster they run on, joined or started with a quiet
console, is `cluster`'s (for the job and for fine-tuning's Ray Train workers alike)."""

from .contract import Stage, StageRunner, StageUDF, check_column_flow
from .decode import DecodeUDF, decode_memory, decode_task_memory
from .encode import EncodeUDF
from .model import ModelUDF

__all__ = ["DecodeUDF", "EncodeUDF", "ModelUDF", "Stage", "StageRunner", "StageUDF", "check_column_flow",
           "decode_memory", "decode_task_memory"]
