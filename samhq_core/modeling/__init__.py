from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoderHQ
from .prompt_encoder import PromptEncoder
from .sam_hq import SamHQModel, SamHQOutput
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer

__all__ = ["ImageEncoderViT", "MaskDecoderHQ", "PromptEncoder", "SamHQModel", "SamHQOutput", "TinyViT", "TwoWayTransformer"]
