"""The usable prompts of a model batch, decoded together where the model allows it. SAM's
prompt encoder gives a prompt one token per point (and a padding token when it has no box) and
two for its box, and a mask prompt stands in for the no-mask embedding: prompts of one form
(as many points, a box or not, a mask or not) are decoded in one call over all the batch's
images, so that each prompt has exactly the tokens the official predictor gives it alone (no
padding points, which would change its mask). A batch of boxes alone is one group, as before
prompts of other kinds existed."""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import torch

from ..schema import BOXES, MASK_INPUTS, POINT_LABELS, POINTS


@dataclass
class ImagePrompts:
    """One image's usable prompts, in the model's frame, as the decode stage wrote them."""

    boxes: torch.Tensor  # (n, 4) xyxy, NaN rows for prompts without a box
    points: List[torch.Tensor]  # per prompt (k, 2)
    labels: List[torch.Tensor]  # per prompt (k,)
    masks: List[Optional[torch.Tensor]]  # per prompt (s, s) low-res logits, or None
    has_box: List[bool]  # per prompt

    @classmethod
    def from_row(cls, batch: pa.Table, i: int, side: int) -> "ImagePrompts":
        """Row `i` of the decode stage's output; `side`: the low-res logits' side."""
        boxes = torch.tensor(batch.column(BOXES)[i].as_py(), dtype=torch.float32).view(-1, 4)
        points = [torch.tensor(p, dtype=torch.float32).view(-1, 2) for p in batch.column(POINTS)[i].as_py()]
        labels = [torch.tensor(k, dtype=torch.long) for k in batch.column(POINT_LABELS)[i].as_py()]
        masks = [None if m is None else torch.frombuffer(bytearray(m), dtype=torch.float32).view(side, side)
                 for m in batch.column(MASK_INPUTS)[i].as_py()]
        return cls(boxes, points, labels, masks, (~boxes.isnan().any(dim=1)).tolist())

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def form(self, j: int) -> Tuple[int, bool, bool]:
        """Prompt j's form: its number of points, whether it has a box, whether a mask."""
        return len(self.points[j]), self.has_box[j], self.masks[j] is not None


@dataclass
class PromptGroup:
    """Prompts of one form from any of the batch's images, as `decode_flat` takes them (on the
    CPU): `members` (image, prompt) in order, each one's image index, and its points with
    labels, box and mask prompt, where the form has them."""

    members: List[Tuple[int, int]]
    image_index: torch.Tensor
    points: Optional[Tuple[torch.Tensor, torch.Tensor]]
    boxes: Optional[torch.Tensor]
    masks: Optional[torch.Tensor]

    def by_image(self) -> List[Tuple[int, List[int]]]:
        """(image, its prompts in the group), in the members' order: each image's are consecutive."""
        found: Dict[int, List[int]] = {}
        for image, prompt in self.members:
            found.setdefault(image, []).append(prompt)
        return list(found.items())


def prompt_groups(images: Sequence[ImagePrompts]) -> List[PromptGroup]:
    """The prompts of `images` by form, in order of each form's first prompt."""
    by_form: Dict[Tuple[int, bool, bool], List[Tuple[int, int]]] = {}
    for k, image in enumerate(images):
        for j in range(len(image)):
            by_form.setdefault(image.form(j), []).append((k, j))
    groups = []
    for (num_points, has_box, has_mask), members in by_form.items():
        points = None
        if num_points:
            points = (torch.stack([images[k].points[j] for k, j in members]),
                      torch.stack([images[k].labels[j] for k, j in members]))
        boxes = torch.stack([images[k].boxes[j] for k, j in members]) if has_box else None
        masks = torch.stack([m for k, j in members if (m := images[k].masks[j]) is not None]) if has_mask else None
        groups.append(PromptGroup(members, torch.tensor([k for k, _ in members]), points, boxes, masks))
    return groups
