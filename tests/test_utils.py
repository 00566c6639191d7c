import json
import re

import numpy as np
import paddle
import pytest

import utils
from conftest import SlowScalar


def test_correct_counts():
    output = paddle.to_tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    target = paddle.to_tensor([1, 2, 2, 1])
    assert [float(c) for c in utils.correct_counts(output, target, topk=(1, 2))] == [2, 3]
    # top-5 of a 3-class problem clamps to top-3: every sample counts.
    assert float(utils.correct_counts(output, target, topk=(5,))[0]) == 4


def test_meter_sums_counts_exactly():
    """evaluate() adds correct counts: in float32, 7/13 * 13 is not 7, and a tally of batch
    means would differ between two ways of batching the same set."""
    meter = utils.SmoothedValue()
    for correct, batch_size in ((7, 13), (15, 19), (3, 21)):
        meter.add(paddle.to_tensor(float(correct)), batch_size)
    assert float(meter.total) == 25 and meter.count == 53
    assert meter.value == pytest.approx(3 / 21)
    logger = utils.MetricLogger()
    logger.add_meter("acc1", meter)
    logger.synchronize_between_processes()  # one process: the sums themselves
    assert (logger.acc1.total, logger.acc1.count) == (25.0, 53)


def test_smoothed_value_accepts_tensors():
    meter = utils.SmoothedValue(window_size=2)
    for value in (paddle.to_tensor(1.0), paddle.to_tensor(2.0), paddle.to_tensor(6.0)):
        meter.update(value)
    assert meter.median == 4.0 and meter.global_avg == 3.0 and meter.value == 6.0


def test_log_every_prints_reference_format(capsys):
    logger = utils.MetricLogger(delimiter="  ")
    for _ in logger.log_every(range(3), 1, "Test:"):
        logger.update(loss=1.0, acc1=0.5)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Test:  [0/3]  eta: ")
    assert "loss: 1.0000 (1.0000)  acc1: 0.5000 (0.5000)  time: " in lines[0]
    assert lines[-1].startswith("Test: Total time: ")


def test_sharded_eval_sampler_partitions_without_padding():
    dataset = list(range(15))
    shards = [list(utils.ShardedEvalSampler(dataset, rank=r, world_size=2)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == dataset
    assert [len(utils.ShardedEvalSampler(dataset, rank=r, world_size=2)) for r in range(2)] == [8, 7]


def test_reduce_across_processes_single_process():
    assert utils.reduce_across_processes([1, paddle.to_tensor(2.5)]) == [1.0, 2.5]


def test_log_every_time_includes_waiting_for_the_device(capsys):
    """The printed step time must count the wait in float() (a GPU catching up), 0.2 s here."""
    logger = utils.MetricLogger(delimiter="  ")
    for _ in logger.log_every(range(2), 1, "Test:"):
        logger.update(loss=SlowScalar(1.0, 0.2))
    times = re.findall(r"  time: ([\d.]+)  ", capsys.readouterr().out)
    assert len(times) == 2 and all(float(t) >= 0.2 for t in times)


def test_metrics_writer(tmp_path):
    path = tmp_path / "sub" / "m.jsonl"
    writer = utils.MetricsWriter(str(path))
    writer.write(type="train", loss=1.5)
    writer.write(type="eval", top1=np.float64(0.5).item(), epoch=None)
    writer.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"type": "train", "loss": 1.5}, {"type": "eval", "top1": 0.5, "epoch": None}]

    appending = utils.MetricsWriter(str(path), append=True)
    appending.write(type="eval", weights="w.pdparams")
    appending.close()
    assert json.loads(path.read_text().splitlines()[-1]) == {"type": "eval", "weights": "w.pdparams"}
    assert len(path.read_text().splitlines()) == 3

    utils.MetricsWriter(str(path)).close()  # a new run starts afresh
    assert path.read_text() == ""
