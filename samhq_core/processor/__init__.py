"""SamHQProcessor: images and prompts in, model inputs out; and masks back to images. It
owns every transform between an image and the model, for the API, the pipeline, the
benchmarks and fine-tuning alike.

Matches the official SamPredictor's preprocessing: the longest side is resized to the
model's input size with PIL bilinear, pixels are normalised, then zero-padded to a square
at the bottom/right; prompt coordinates are scaled by the same factors. Masks go back the
same way: the low-res logits are upsampled to the input frame, the padding is cropped, and
the rest is resized to the original image size.

The steps are also entry points of their own, for callers that run them apart (the
pipeline resizes on CPU workers and normalises on the model's device):
`resize_image` (CPU) → `model_input` (any device) for images, `scale_boxes` and
`scale_coords` for boxes and points, `mask_prompt_logits` for a binary mask given as a prompt,
and `masks_at_original_size` (any device, in bounded chunks) for masks, and `stability_scores`
for SAM's stability score of mask logits; `pad_to_bucket` pads images or prompts to a few
fixed counts for a compiled model.
"""

from .buckets import bucket_size, pad_to_bucket
from .images import ImageInput, preprocess_shape, resize_longest_side, to_rgb_array
from .processor import MASK_PROMPT_LOGIT, MAX_PIXELS_PER_CHUNK, ProcessorOutput, SamHQProcessor
from .stability import stability_scores

__all__ = ["ImageInput", "MASK_PROMPT_LOGIT", "MAX_PIXELS_PER_CHUNK", "ProcessorOutput", "SamHQProcessor", "bucket_size",
           "pad_to_bucket", "preprocess_shape", "resize_longest_side", "stability_scores", "to_rgb_array"]
