"""benchmarks/compare_queries.py: ranks agree with a pair-by-pair exact scan; --folder writes JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import compare_queries  # noqa: E402

from teran_es.evaluation import encode_captions, encode_image_set  # noqa: E402
from teran_es.features.pixels import ImageFile, image_file_set  # noqa: E402
from teran_es.model.alignment import chunked_scores  # noqa: E402
from teran_es.model.checkpoint import load_checkpoint  # noqa: E402


def _images(tiny_emoji):
    root = tiny_emoji["collection"]
    return [ImageFile(r["image_id"], str(root / r["path"]), [r["captions"][0]]) for r in tiny_emoji["rows"]]


def test_ranks_agree_with_scoring_each_image_alone(tiny_emoji):
    images = _images(tiny_emoji)
    queries = {"a red square": "openmoji-C0", "a blue cross": "fluent-C5"}
    got = compare_queries.ranked(str(tiny_emoji["checkpoint"]), images, queries, k=4)["queries"]
    model, _, _ = load_checkpoint(tiny_emoji["checkpoint"])
    words, word_mask = encode_captions(model, list(queries))
    scores = []
    for image in images:  # one image at a time: no batching shared with the code under test
        regions, mask = encode_image_set(model, image_file_set([image], model.config.image_size, name="one"))
        scores.append(chunked_scores(regions, mask, words, word_mask)[0])
    scores = torch.stack(scores)  # [N, Q]
    for j, (query, expected) in enumerate(queries.items()):
        target = scores[[i.image_id for i in images].index(expected), j]
        assert got[query]["rank"] == int((scores[:, j] > target).sum()) + 1
        assert len(got[query]["top"]) == 4
        assert got[query]["top"][0] == images[int(scores[:, j].argmax())].image_id


def test_a_folder_run_writes_every_checkpoint(tiny_emoji, tmp_path):
    out = tmp_path / "q.json"
    folder = tiny_emoji["collection"] / "images" / "fluent"
    checkpoint = str(tiny_emoji["checkpoint"])
    compare_queries.main([checkpoint, "--folder", str(folder), "--query", "a red square=C0.png", "--k", "3",
                          "--threads", "1", "--out", str(out)])
    written = json.loads(out.read_text())
    (entry,) = written["models"].values()
    assert written["images"] == 9 and entry["queries"]["a red square"]["expected"] == "C0.png"
    assert 1 <= entry["queries"]["a red square"]["rank"] <= 9
