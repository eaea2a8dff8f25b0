"""``teran-es evaluate --generalisation`` end to end on a tiny multi-source collection: the
three protocols by the exact scan and through the embedded pipeline, as JSON and as a table,
and the usage errors."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from teran_es.cli import cli


def invoke(*args: str, code: int = 0):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def test_the_three_protocols_as_json_and_as_a_table(tiny_emoji, tmp_path):
    from teran_es.evaluation import encode_image_set
    from teran_es.generalisation import build_protocols
    from teran_es.generalisation_eval import collection_image_set, exact_ranks
    from teran_es.model.checkpoint import load_checkpoint

    checkpoint = str(tiny_emoji["checkpoint"])
    common = ["--generalisation", "unseen,heldout,openmoji", "--candidates", "10", "--candidates", "50",
              "--device", "cpu", "--threads", "1", "--batch-size", "8", "--no-progress", "--workdir", str(tmp_path / "w")]
    payload = json.loads(invoke("evaluate", checkpoint, *common, "--queries", "3", "--json").stdout)
    assert list(payload["protocols"]) == ["unseen", "heldout", "openmoji"]
    assert payload["images"] == 27 and payload["candidates"] == [10, 50] and payload["queries"] == 3
    model, _, _ = load_checkpoint(checkpoint)
    image_set = collection_image_set(model, tiny_emoji["rows"], tiny_emoji["collection"])
    regions, mask = encode_image_set(model, image_set)
    for name, protocol in build_protocols(tiny_emoji["rows"]).items():
        entry = payload["protocols"][name]
        assert entry["gallery"] == len(protocol.gallery) and entry["text_queries"] == len(protocol.texts)
        t2i, i2t = exact_ranks(model, regions, mask, protocol)
        assert entry["exact"]["t2i"]["r10"] == round(100 * float((t2i < 10).mean()), 2)
        assert entry["exact"]["i2t"]["r1"] == round(100 * float((i2t < 1).mean()), 2)
        assert entry["pipeline"]["queries"] == 3 and entry["pipeline"]["ingest"]["images"] == len(protocol.gallery)
        assert {"recall 10 + rerank", "recall 50 + rerank"} <= set(entry["pipeline"])
        assert (tmp_path / "w" / name / "store").is_dir()

    table = invoke("evaluate", checkpoint, *common, "--queries", "0").stdout
    lines = table.splitlines()
    for name in ("unseen", "heldout", "openmoji"):
        mine = [line for line in lines if line.startswith(name)]
        assert [line.split()[1:4] for line in mine][:1] == [["text", "->", "image"]]
        methods = [" ".join(line.split()[4:-5]) for line in mine]  # between the direction and the figures
        assert methods[:2] == ["exact", "exact (sample)"] and methods[-1] == "exact"
        assert sum(m.startswith("recall") for m in methods) == 2 and any("image -> text" in line for line in mine)
        assert f"{payload['protocols'][name]['text_queries']:7d}" in mine[1]  # --queries 0: every text query
        kinds = [line for line, method in zip(mine, methods, strict=True) if method.startswith("exact, ")]
        assert kinds and sum(int(line.split()[-5]) for line in kinds) == payload["protocols"][name]["text_queries"]


def test_usage_errors(tiny_emoji, tmp_path):
    from teran_es.config import load_config, save_config

    checkpoint = str(tiny_emoji["checkpoint"])
    other = tmp_path / "openmoji-checkpoint"
    shutil.copytree(checkpoint, other)
    config = load_config(other / "config.toml", ["data.format=openmoji"])
    save_config(config, other / "config.toml")
    result = invoke("evaluate", str(other), "--generalisation", "all", "--no-progress", code=2)
    assert "needs the multi-source emoji collection" in result.output and "openmoji" in result.output
    result = invoke("evaluate", checkpoint, "--generalisation", "unseen,everything", code=2)
    assert "everything" in result.output and "unseen, heldout, openmoji" in result.output
    result = invoke("evaluate", checkpoint, "--generalisation", "all", "--split", "val", code=2)
    assert "--split: not with --generalisation" in result.output
    result = invoke("evaluate", checkpoint, "--generalisation", "all", "--backend", "elasticsearch", code=2)
    assert "embedded" in result.output
    result = invoke("evaluate", checkpoint, "--queries", "5", code=2)
    assert "only with --generalisation" in result.output
    result = invoke("evaluate", checkpoint, "--generalisation", "all", "--data", str(tmp_path), "--no-progress", code=1)
    assert "teran-es emoji build" in result.output


def test_a_checkpoints_query_bank_is_applied_unless_asked_not_to(tiny_emoji, tmp_path):
    """`teran-es query-bank` on an emoji checkpoint takes its collection's training captions;
    `evaluate --generalisation` then ranks text -> image less the normalisers, as search does,
    and `--no-bank-norm` gives the plain figures."""
    from teran_es.evaluation import encode_image_set
    from teran_es.generalisation import bank_texts, build_protocols, recalls
    from teran_es.generalisation_eval import collection_image_set, exact_ranks, row_normalisers
    from teran_es.model.checkpoint import load_checkpoint

    checkpoint = tmp_path / "with-bank"
    shutil.copytree(tiny_emoji["checkpoint"], checkpoint)
    attached = json.loads(invoke("query-bank", str(checkpoint), "--size", "0", "--json").stdout)
    assert attached["texts"] == len(bank_texts(tiny_emoji["rows"])) and attached["beta"] == 5.0
    common = ["--generalisation", "unseen", "--device", "cpu", "--threads", "1", "--no-progress", "--json"]
    normalised = json.loads(invoke("evaluate", str(checkpoint), *common).stdout)
    plain = json.loads(invoke("evaluate", str(checkpoint), *common, "--no-bank-norm").stdout)
    assert normalised["query_bank"]["fingerprint"] == attached["fingerprint"] and plain["query_bank"] is None

    model, _, _ = load_checkpoint(checkpoint)
    image_set = collection_image_set(model, tiny_emoji["rows"], tiny_emoji["collection"])
    regions, mask = encode_image_set(model, image_set)
    protocol = build_protocols(tiny_emoji["rows"])["unseen"]
    t2i, i2t = exact_ranks(model, regions, mask, protocol, normaliser=row_normalisers(model, regions, mask))
    plain_t2i, _ = exact_ranks(model, regions, mask, protocol)
    assert normalised["protocols"]["unseen"]["exact"] == {"t2i": recalls(t2i), "i2t": recalls(i2t)}
    assert plain["protocols"]["unseen"]["exact"]["t2i"] == recalls(plain_t2i)
    assert plain["protocols"]["unseen"]["exact"]["i2t"] == recalls(i2t)
