"""Masks as the package stores, draws, scores and exports them, without torch: the COCO RLE
codec (`rle`), polygons (`polygons`), pictures over images (`drawing`) and the per-box
metrics (`metrics`)."""
