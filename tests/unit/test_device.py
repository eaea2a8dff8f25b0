"""One rule for every device setting (teran_es/device.py), with and without CUDA."""

from __future__ import annotations

import pytest
import torch

from teran_es.device import DeviceError, resolve_device
from teran_es.errors import ConfigError, TeranError


@pytest.fixture
def cuda(monkeypatch):
    """Pretend torch sees ``count`` CUDA devices (0 = none)."""

    def have(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    return have


@pytest.mark.parametrize("name", ["", "auto", None])
def test_auto_and_empty_mean_cuda_when_there_is_one(cuda, name):
    cuda(2)
    assert resolve_device(name) == torch.device("cuda")
    cuda(0)
    assert resolve_device(name) == torch.device("cpu")


@pytest.mark.parametrize(
    "name, expected",
    [("cpu", torch.device("cpu")), ("cuda", torch.device("cuda")), ("cuda:1", torch.device("cuda", 1))],
)
def test_named_devices_are_taken_as_given(cuda, name, expected):
    cuda(2)
    assert resolve_device(name) == expected
    assert resolve_device(expected) == expected


@pytest.mark.parametrize("name", ["cuda", "cuda:0", torch.device("cuda", 0)])
def test_cuda_on_a_machine_without_it_is_a_clear_error(cuda, name):
    cuda(0)
    with pytest.raises(DeviceError, match="no CUDA device on this machine.*'auto'.*'cpu'"):
        resolve_device(name)


def test_a_cuda_index_beyond_the_devices_present_is_refused(cuda):
    cuda(2)
    with pytest.raises(DeviceError, match=r"'cuda:2'.*has 2 CUDA device\(s\): cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_a_name_that_is_no_device_is_refused(cuda):
    cuda(0)
    with pytest.raises(DeviceError, match="unknown device 'gpu' \\(use auto, cpu, cuda or cuda:N\\)"):
        resolve_device("gpu")


def test_device_errors_are_config_errors():
    assert issubclass(DeviceError, ConfigError) and issubclass(DeviceError, TeranError)


def test_ingest_has_a_device_setting_of_its_own(cuda, tiny_pipeline, tmp_path):
    from teran_es.indexer import Ingestor
    from teran_es.model.teran import build_model

    config = tiny_pipeline(f"workdir={tmp_path / 'work'}", "ingest.device=cpu", "search.device=cuda")
    cuda(0)  # the search device could not be used here: ingest must not look at it
    with Ingestor(config, model=build_model(config.model)) as ingestor:
        assert ingestor.device == torch.device("cpu")
    config.ingest.device = "cuda"
    with pytest.raises(DeviceError):
        Ingestor(config, model=build_model(config.model))


def test_the_evaluate_verb_refuses_an_absent_cuda_device_cleanly(cuda, tmp_path):
    from click.testing import CliRunner

    from teran_es.cli import cli

    cuda(0)
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path), "--device", "cuda:0", "--no-progress"])
    assert result.exit_code == 1 and "no CUDA device on this machine" in result.output
    assert "Traceback" not in result.output
