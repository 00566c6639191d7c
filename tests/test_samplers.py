"""The order in which train.py feeds samples: a new permutation of the whole training set
every epoch (torchvision's DistributedSampler with shuffle), reproducible per epoch for
resuming; evaluation sees every sample exactly once, with nothing dropped or padded."""

import numpy as np
import pytest

import utils
from train import make_loaders


class IndexDataset:
    """Item ``i`` is the image ``[i]`` with label 0, so a batch shows which samples it holds."""

    def __init__(self, size):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return np.array([index], np.float32), 0


def loaders(train_size, test_size, batch_size):
    return make_loaders(IndexDataset(train_size), IndexDataset(test_size), batch_size, workers=0, skip_bad_images=False)


def indices_per_batch(loader):
    return [images.numpy()[:, 0].astype(int).tolist() for images, _ in loader]


def test_each_training_epoch_is_a_new_permutation_of_all_samples():
    train_sampler, train_loader, _ = loaders(23, 5, batch_size=4)
    orders = []
    for epoch in range(3):
        train_sampler.set_epoch(epoch)
        batches = indices_per_batch(train_loader)
        assert [len(batch) for batch in batches] == [4] * 5 + [3]  # the last, partial batch is kept
        orders.append(sum(batches, []))
    for order in orders:
        assert sorted(order) == list(range(23)) and order != sorted(order)
    assert len({tuple(order) for order in orders}) == 3
    # set_epoch alone fixes an epoch's order, so a resumed run sees what it would have seen.
    train_sampler.set_epoch(1)
    assert sum(indices_per_batch(train_loader), []) == orders[1]


def test_evaluation_sees_every_sample_once_in_order():
    _, _, test_loader = loaders(8, 11, batch_size=4)
    assert indices_per_batch(test_loader) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]


def test_sharded_eval_sampler_defaults_to_this_process_alone():
    sampler = utils.ShardedEvalSampler(list(range(7)))
    assert (sampler.rank, sampler.world_size) == (0, 1)
    assert list(sampler) == list(range(7)) and len(sampler) == 7


@pytest.mark.parametrize("size, world_size", [(15, 2), (16, 4), (5, 3), (2, 4), (0, 2)])
def test_sharded_eval_sampler_partitions_the_dataset(size, world_size):
    shards = [utils.ShardedEvalSampler(list(range(size)), rank=r, world_size=world_size) for r in range(world_size)]
    indices = [list(shard) for shard in shards]
    assert [len(shard) for shard in shards] == [len(i) for i in indices]
    assert sorted(sum(indices, [])) == list(range(size))
    # Shard sizes differ by at most one: no process waits on a much longer shard.
    assert max(map(len, indices)) - min(map(len, indices)) <= 1
