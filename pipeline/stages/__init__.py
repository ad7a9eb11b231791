"""The job's stages: CPU decode → SAM-HQ model actors → CPU RLE encode (`base` holds the
contract they follow)."""

from .base import Stage, StageUDF, check_column_flow
from .decode import DecodeUDF, boxes_to_xyxy, check_boxes, decode_memory, decode_stage
from .encode import EncodeUDF, encode_stage
from .model import ModelUDF, model_stage

__all__ = ["DecodeUDF", "EncodeUDF", "ModelUDF", "Stage", "StageUDF", "boxes_to_xyxy", "check_boxes",
           "check_column_flow", "decode_memory", "decode_stage", "encode_stage", "model_stage"]
