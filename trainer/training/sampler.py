"""Length-bucketed batches for unpacked training: neighbours in length share a batch, batches come in random order."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class LengthBucketSampler(Sampler[int]):
    """Sorts the examples by length (ties broken at random), cuts the order into batches of `batch_size`, and serves
    the full batches in a random order: a batch pads to a neighbour's length (transformers' LengthGroupedSampler
    pads within random megabatches: 4.7% padding against 1.2% here on `make bench`'s data), and the length a step
    sees is still shuffled. Seeded by (seed, epoch), so a resumed run replays the same batches."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        noise = torch.rand(len(self.lengths), generator=generator).tolist()
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], noise[i]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        # The DataLoader cuts this flat order into batches again: a short batch anywhere but last would shift every
        # later cut off the buckets (seen: 25% padding instead of 1%). The short one, if any, comes last.
        short = batches.pop() if batches and len(batches[-1]) < self.batch_size else []
        for position in torch.randperm(len(batches), generator=generator).tolist():
            yield from batches[position]
        yield from short
