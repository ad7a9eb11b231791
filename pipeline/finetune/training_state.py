"""A Ray Train run's training checkpoint: what its workers need to go on where it stopped,
saved by rank 0 every training.checkpoint_every steps into a directory that Ray Train persists
under model.output/_training/ (`ray.train.report`) and hands back to every worker of a
restarted worker group or of a rerun (`ray.train.get_checkpoint`)."""

import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import torch

STATE_FILE = "training_state.pt"


@dataclass
class TrainingState:
    """`trainer`: samhq_core's PhaseTrainer.state_dict() (the trained parameters, optimizer,
    schedule and step). `passes`: passes over the training rows begun; a resumed run begins
    the next one (Ray Data cannot resume within a pass: the rows of the interrupted one may be
    seen again, shuffled anew). `skipped`: the rows every worker skipped so far, by reason.
    `before`: the validation scores before training. `seconds`: training time so far."""

    trainer: Dict[str, Any]
    passes: int
    skipped: Dict[str, int]
    before: Dict[str, Dict[str, float]]
    seconds: float

    @property
    def step(self) -> int:
        return int(self.trainer["step"])

    def save(self, directory: str) -> None:
        torch.save(asdict(self), os.path.join(directory, STATE_FILE))

    @classmethod
    def load(cls, directory: str) -> "TrainingState":
        # Tensors and plain data only: nothing in a checkpoint runs code as it loads.
        return cls(**torch.load(os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=True))


def restored_state() -> Optional[TrainingState]:
    """The latest training checkpoint Ray Train has for this run (after a worker failure, or
    from an earlier driver's run at the same storage path), or None."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return TrainingState.load(directory)

