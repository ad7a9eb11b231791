"""The job's stages: CPU decode → SAM-HQ model actors → CPU RLE encode, each a typed result and
a UDF under the contract of `contract` (after Ray's own batch-inference stages); the model
stage's masks are run-length coded on its device (`run_lengths`), and worker deaths are
counted per row (`crash_guard`)."""

from .contract import Stage, StageRunner, StageUDF, check_column_flow
from .decode import DecodeUDF, decode_memory
from .encode import EncodeUDF
from .model import ModelUDF

__all__ = ["DecodeUDF", "EncodeUDF", "ModelUDF", "Stage", "StageRunner", "StageUDF", "check_column_flow",
           "decode_memory"]
