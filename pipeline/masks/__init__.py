"""Masks as the package stores, draws, scores and exports them, without torch: the COCO RLE
codec (`rle`), polygons (`polygons`), pictures over images (`drawing`), the per-box
metrics (`metrics`) and masks counted by what found them (`found_by`)."""
