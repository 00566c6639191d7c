"""DataLoader construction for train.py: Paddle's multi-process DataLoader, or batching in
the calling thread when no worker processes are asked for."""

import paddle


class InProcessLoader:
    """Batches read in the calling thread.

    Paddle's DataLoader with ``num_workers=0`` still reads in a background thread, and in
    Paddle 3.3 an exception raised there (an unreadable image, say) leaves the main thread
    waiting forever. Reading here lets the error propagate, naming the file.
    """

    def __init__(self, dataset, batch_sampler, collate_fn):
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.collate_fn = collate_fn

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        for indices in self.batch_sampler:
            batch = self.collate_fn([self.dataset[i] for i in indices])
            yield [paddle.to_tensor(field) for field in batch]


def make_loader(dataset, batch_sampler, collate_fn, num_workers=0, use_shared_memory=True):
    if num_workers == 0:
        return InProcessLoader(dataset, batch_sampler, collate_fn)
    return paddle.io.DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers,
                                collate_fn=collate_fn, use_shared_memory=use_shared_memory)
