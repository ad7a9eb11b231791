"""Which mask the HQ decoder outputs for a prompt: the three ways of reading one SAM-HQ
checkpoint, from the official output to the baseline the paper compares it with."""

import enum


class MaskSource(str, enum.Enum):
    """SAM_PLUS_HQ: SAM's mask plus the HQ token's term, the official output (the official
    predictor's `hq_token_only=False`). HQ_ONLY: the HQ token's mask alone (`hq_token_only=True`).
    SAM_ONLY: plain SAM with these weights: the HQ token left out of the decoder's tokens and no
    HQ term. The values are the names a job config uses (`model.mask_source`)."""

    SAM_PLUS_HQ = "sam_plus_hq"
    HQ_ONLY = "hq_only"
    SAM_ONLY = "sam_only"
