"""The shipped demo model: HF layout within the size budget, a model card, and masks that
are really good on synthetic scenes it never saw (bare loop and metrics of the project)."""

import os

import pytest
from helpers.pipeline_data import labelled_parquet

from pipeline.config import DataConfig, StorageConfig
from pipeline.demo.dataset import DEMO_CHECKPOINT
from pipeline.finetune.data import LabelledImages
from pipeline.finetune.scoring import evaluate
from samhq_core import SamHQModel


def test_checkpoint_layout_and_card():
    files = sorted(os.listdir(DEMO_CHECKPOINT))
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    weights = sum(os.path.getsize(os.path.join(DEMO_CHECKPOINT, f)) for f in ("config.json", "model.safetensors"))
    assert weights <= 20 * 2**20
    card = open(os.path.join(DEMO_CHECKPOINT, "README.md")).read()
    assert "demo only" in card.lower() and "not for real images" in card.lower()


@pytest.fixture(scope="module")
def unseen_scenes(tmp_path_factory):
    model = SamHQModel.from_pretrained(DEMO_CHECKPOINT)
    path, _ = labelled_parquet(tmp_path_factory.mktemp("scenes"), num_images=16)
    data = DataConfig(train=path, id_column="image_id", boxes_column="boxes", image_column="image")
    return model, list(LabelledImages(path, data, StorageConfig(), model).examples(None))


def test_masks_are_good_and_hq_beats_sam_on_boundaries(unseen_scenes):
    model, examples = unseen_scenes
    scores = evaluate(model, examples)
    assert scores["hq_only"]["boxes"] >= 30
    assert scores["hq_only"]["miou"] >= 0.58, scores  # 0.67 on 200 held-out scenes; random: ~0.04
    assert scores["hq_only"]["mbiou"] >= scores["sam_only"]["mbiou"] + 0.03, scores
