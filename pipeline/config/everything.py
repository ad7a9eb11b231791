"""The job's `everything` section: which rows go through segment-everything (SAM's automatic
mask generation from a grid of point prompts) and the generator's parameters, named and
defaulted as the official SAM-HQ `SamAutomaticMaskGenerator`'s (samhq_core's
`SamHQAutomaticMaskGenerator` runs it on the model actors). Its masks are written as COCO RLE
in the result's mask columns, as every mask the job finds: the official generator's
output_mode has no counterpart."""

from typing import Any, ClassVar, List, Literal, Mapping

from pydantic import Field

from .base import Section

# Which rows: none (segment-everything is off; the default), the rows without prompts (every
# row, when no prompt column is configured), or all rows (after their prompts' masks).
EverythingRows = Literal["none", "without_prompts", "all"]


class EverythingConfig(Section):
    section: ClassVar[str] = "everything"
    rows: EverythingRows = Field(
        "none", description="Rows whose masks segment-everything finds: none (off), without_prompts (rows whose "
                            "prompt lists are empty or null; every row when the input section names no prompt "
                            "column) or all (every row; a row's prompt masks come first). Its masks have found_by "
                            "'everything', a null prompt_index, the point that found each and its crop box.")
    points_per_side: int = Field(32, ge=1, description="Points along each side of the whole image's grid "
                                                       "(points_per_side ** 2 point prompts).")
    points_per_batch: int = Field(64, ge=1, description="Point prompts decoded at once; they may span the crops "
                                                        "and images of a model batch.")
    pred_iou_thresh: float = Field(0.88, ge=0, description="Masks of predicted IoU up to this are dropped "
                                                           "(0: none).")
    stability_score_thresh: float = Field(0.95, ge=0, description="Masks of stability score below this are dropped "
                                                                  "(0: none).")
    stability_score_offset: float = Field(1.0, description="How far from the mask threshold the two thresholds of the "
                                                           "stability score lie.")
    box_nms_thresh: float = Field(0.7, ge=0, le=1, description="Box IoU above which non-maximum suppression within a "
                                                               "crop drops the mask of lower predicted IoU.")
    crop_n_layers: int = Field(0, ge=0, le=4, description="Crop layers after the whole image; layer i cuts the image "
                                                          "into (2 ** i) ** 2 overlapping crops, each run as an image "
                                                          "of its own.")
    crop_nms_thresh: float = Field(0.7, ge=0, le=1, description="Box IoU above which non-maximum suppression across "
                                                                "an image's crops drops the mask of the larger crop.")
    crop_overlap_ratio: float = Field(512 / 1500, ge=0, lt=1, description="Overlap of layer 1's crops, as a fraction "
                                                                          "of the image's shorter side.")
    crop_n_points_downscale_factor: int = Field(1, ge=1, description="Layer i's grid has points_per_side / "
                                                                     "crop_n_points_downscale_factor ** i points per "
                                                                     "side.")
    min_mask_region_area: int = Field(0, ge=0, description="When > 0, holes and islands of fewer pixels are removed "
                                                           "from each mask (OpenCV), then NMS runs again.")
    multimask_output: bool = Field(True, description="A point's mask is the best of the decoder's 3 candidates by "
                                                     "predicted IoU (as the official generator; plain SAM keeps all "
                                                     "3), or its single-mask output.")

    @property
    def enabled(self) -> bool:
        return self.rows != "none"

    def runs_on(self, has_prompts: bool) -> bool:
        """Whether segment-everything runs on a row that has prompts or has none."""
        return self.rows == "all" or (self.rows == "without_prompts" and not has_prompts)

    @property
    def crops_per_image(self) -> int:
        """Crops each image is cut into, the whole image included."""
        return sum(4**layer for layer in range(self.crop_n_layers + 1))

    @classmethod
    def cross_checks(cls, values: Mapping[str, Any]) -> List[str]:
        side, factor, layers = (values.get(k) for k in ("points_per_side", "crop_n_points_downscale_factor",
                                                        "crop_n_layers"))
        if isinstance(side, int) and isinstance(factor, int) and isinstance(layers, int) and side // factor**layers < 1:
            return [f"everything: crop layer {layers} would have no points (points_per_side {side} // "
                    f"crop_n_points_downscale_factor {factor} ** {layers} is 0)"]
        return []
