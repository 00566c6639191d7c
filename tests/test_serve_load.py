"""benchmarks/serve_load.py's record of what it measured: which model, and whether that
model's answers can tell the benchmark images apart (without that, "0 mismatches" says
nothing). The load runs themselves are a benchmark, not a test."""

import hashlib
import json

from benchmarks import serve_load


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
