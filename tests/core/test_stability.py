"""SAM's stability score (`samhq_core.processor.stability_scores`) against the official
`calculate_stability_score`, on logits with every kind of edge case."""

import torch
from helpers import official

from samhq_core.processor import stability_scores


def test_stability_scores_match_the_official_definition():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 37, 53, generator=generator) * 3
    logits[1] = -5.0  # empty at both thresholds: 0 / 0
    logits[2] = 5.0  # full at both thresholds
    logits[3] = 0.5  # inside the outer threshold only: 0 / all
    logits[4, :, :20] = 1.0  # exactly at the inner threshold, which is strict (>)
    ours = stability_scores(logits, mask_threshold=0.0, offset=1.0)
    expected = official.calculate_stability_score(logits, 0.0, 1.0)
    torch.testing.assert_close(ours, expected, equal_nan=True)
    assert torch.isnan(ours[1]) and ours[2] == 1.0 and ours[3] == 0.0
    assert 0.0 < ours[0] < 1.0

    shifted = stability_scores(logits, mask_threshold=0.7, offset=0.5)
    torch.testing.assert_close(shifted, official.calculate_stability_score(logits, 0.7, 0.5), equal_nan=True)
