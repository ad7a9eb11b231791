"""A Ray Train worker's training batches: its shard of the training rows (Ray Data's split of
the decoded dataset among the workers, `ray.train.get_dataset_shard`), as examples, pass
after pass, in step with the other workers."""

from collections import deque
from typing import Any, Callable, Deque, Iterator, Optional

import torch
import torch.distributed as dist

from samhq_core.training.recipe import Batch

from .data import Example, ExampleMaker, to_batch

# Decoded rows taken from the shard at a time (the decode stage's batches are as small).
_ROWS_PER_READ = 16


class ShardBatches:
    """Batches of `batch_size` examples from this worker's shard, shuffled by Ray Data within
    a buffer of `shuffle_buffer` rows, with a seed of its own for every pass.

    Ray Data starts a pass over a split dataset on all the workers together: a worker that
    begins its next pass waits for the others to begin theirs. Under DDP every worker takes
    every step, so a worker whose pass ran out before a step's batch was full, waiting there,
    would never be joined by the others, which wait for it in the step's gradient all-reduce.
    So before each step the workers agree (an all-reduce of one flag) whether a pass ran out
    anywhere; if so, each finishes its own pass (what is left waits for the next steps) and
    they all begin the next one together. Shards are of equal rows (Ray Train splits with
    `equal=True`), so what is left is what the workers skipped differently."""

    def __init__(self, shard: Any, maker: ExampleMaker, batch_size: int, shuffle_buffer: int, seed: int, passes: int,
                 device: torch.device, log: Callable[[str], None]) -> None:
        """`shard`: the worker's ray.data.DataIterator; `passes`: passes begun before (a
        resumed run's), which the seeds of the next ones follow; `log` is told when a pass
        begins."""
        self.shard, self.maker, self.batch_size, self.shuffle_buffer = shard, maker, batch_size, shuffle_buffer
        self.seed, self.passes, self.device, self.log = seed, passes, device, log
        self._pending: Deque[Example] = deque()
        self._rows: Optional[Iterator[Example]] = None
        self._seen = 0  # usable examples of the current pass

    def next_batch(self) -> Batch:
        """The next step's batch, taken when every worker has one."""
        if self._rows is None:
            self._begin_pass()
        while True:
            ran_out = not self._fill()
            if not self._anywhere(ran_out):
                break
            if ran_out and self._seen == 0:
                raise ValueError(f"no usable training rows in this worker's shard of the training data (skipped: "
                                 f"{dict(self.maker.skipped)}): give more data, or fewer training.workers")
            self._pending.extend(self._rows or ())  # the rest of this worker's pass, if it has not run out
            self._begin_pass()
        return to_batch([self._pending.popleft() for _ in range(self.batch_size)], self.device)

    def _begin_pass(self) -> None:
        """Begin the next pass here, as every worker does at this step: its first example is
        taken at once, which is when Ray Data's split waits for the other workers' passes to
        begin (a worker that still had a batch pending would otherwise not begin it yet)."""
        self._rows = self._pass()
        self._take()

    def _fill(self) -> bool:
        """Take examples until a batch is pending; False when the pass ran out first."""
        while len(self._pending) < self.batch_size:
            if not self._take():
                return False
        return True

    def _take(self) -> bool:
        """One more example of the pass; False when it has run out."""
        assert self._rows is not None
        example = next(self._rows, None)
        if example is None:
            return False
        self._seen += 1
        self._pending.append(example)
        return True

    def _pass(self) -> Iterator[Example]:
        self._seen = 0
        self.passes += 1
        self.log(f"data: pass {self.passes} over the training rows begins")
        for batch in self.shard.iter_batches(batch_size=_ROWS_PER_READ, batch_format="pyarrow",
                                             local_shuffle_buffer_size=self.shuffle_buffer,
                                             local_shuffle_seed=self.seed + self.passes):
            yield from self.maker.examples(batch)

    def _anywhere(self, flag: bool) -> bool:
        """Whether `flag` holds on any worker."""
        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())
