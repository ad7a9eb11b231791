"""`import`: reviewed annotations back in. A Label Studio JSON export (`label_studio`) or a COCO
instances file (`coco`) becomes the labelled Parquet that `finetune` reads (`labelled`), each
image located as an absolute path or URI (`image_paths`), each annotation marked as changed or
not by a person against the prediction it started from (`matching`), with counts of everything
read, compared and skipped (`records`)."""
