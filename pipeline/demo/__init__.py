"""`demo`: a sample dataset of synthetic scenes (`dataset`) through the whole pipeline, locally,
with the project's demo model, then export, evaluation and overlays (`run`)."""
