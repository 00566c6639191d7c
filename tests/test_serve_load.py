"""benchmarks/serve_load.py's record of what it measured: which model, and whether that
model's answers can tell the benchmark images apart (without that, "0 mismatches" says
nothing). The load runs themselves are a benchmark, not a test."""

import asyncio
import hashlib
import json
import os
import time

import h11

from benchmarks import serve_load
from benchmarks.service_process import cpu_seconds, memory_bytes


def test_images_told_apart_by_class_or_by_probability():
    references = [
        (0, 0.9), (0, 0.90005),  # same class, probabilities within 1e-4: a swap goes unseen
        (1, 0.9),  # same probability as image 0 but another class
        (2, 0.5), (2, 0.6),  # same class, probabilities far apart
    ]
    assert serve_load.images_told_apart(references) == 3
    assert serve_load.images_told_apart([(3, 0.2551), (3, 0.25512), (3, 0.25508)]) == 0


def test_model_record_names_the_files_by_hash(tmp_path):
    (tmp_path / "inference.json").write_text('{"program": 1}')
    (tmp_path / "inference.pdiparams").write_bytes(b"weights")
    (tmp_path / "inference_meta.json").write_text(json.dumps({"num_classes": 4, "precision": "fp32"}))
    record = serve_load.model_record(tmp_path)
    assert record["model_dir"] == str(tmp_path.resolve())
    assert record["sha256"] == {
        "inference.json": hashlib.sha256(b'{"program": 1}').hexdigest(),
        "inference.pdiparams": hashlib.sha256(b"weights").hexdigest(),
    }
    assert record["metadata"] == {"num_classes": 4, "precision": "fp32"}


def test_cpu_seconds_from_proc_agree_with_process_time():
    """How serve_load measures the service's CPU per image, checked on this process, whose
    own clock for it is time.process_time()."""
    start_proc, start_clock = cpu_seconds(os.getpid()), time.process_time()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert abs((cpu_seconds(os.getpid()) - start_proc) - (time.process_time() - start_clock)) < 0.05
    assert memory_bytes(os.getpid(), "VmHWM") >= memory_bytes(os.getpid(), "VmRSS") > 0


def test_load_client_keeps_its_connection_and_reconnects_when_closed():
    """One connection for many requests; when the service closes it (the third answer says
    Connection: close), the next request opens another instead of failing."""
    connections, answered = [], []

    async def serve(reader, writer):
        connections.append(writer)
        http = h11.Connection(h11.SERVER)
        while http.our_state is not h11.MUST_CLOSE:
            event = http.next_event()
            if event is h11.NEED_DATA:
                if not (data := await reader.read(65536)):
                    break
                http.receive_data(data)
            elif isinstance(event, h11.EndOfMessage):
                answered.append(event)
                headers = [("Content-Length", "2")] + ([("Connection", "close")] if len(answered) == 3 else [])
                writer.write(http.send(h11.Response(status_code=200, headers=headers))
                             + http.send(h11.Data(data=b"{}")) + http.send(h11.EndOfMessage()))
                if http.our_state is h11.DONE:
                    http.start_next_cycle()
        writer.close()

    async def five_requests():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = serve_load.KeepAliveConnection(f"http://127.0.0.1:{port}/alexnet/prediction")
        answers = [await client.post(b"{}") for _ in range(5)]
        client.close()
        server.close()
        return answers

    assert asyncio.run(five_requests()) == [(200, b"{}")] * 5
    assert len(connections) == 2
