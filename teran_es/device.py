"""Which torch device a device setting names: one rule for training, ingest, search and evaluation.

The rule (``train.device``, ``ingest.device``, ``search.device``, ``--device``):

- ``""`` and ``"auto"``: the first CUDA device when torch sees one, else the CPU;
- ``"cpu"``, ``"cuda"``, ``"cuda:N"``: that device; other names torch knows (``"mps"``) too;
- a CUDA device this machine does not have is a :class:`DeviceError` here, when the setting
  is read, rather than an obscure failure at the first tensor moved to it.
"""

from __future__ import annotations

import torch

from teran_es.errors import ConfigError

AUTO_NAMES = ("", "auto")
FORMS = "auto, cpu, cuda or cuda:N"


class DeviceError(ConfigError):
    """A device setting that names no device this machine has, or no device at all."""


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The torch device ``name`` means under the rule of the module docstring (None = auto)."""
    if isinstance(name, torch.device):
        device = name
    elif name is None or name in AUTO_NAMES:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, ValueError):  # torch's words for a string that names no device type
            raise DeviceError(f"unknown device {name!r} (use {FORMS})") from None
    if device.type == "cuda":
        _check_cuda(device)
    return device


def _check_cuda(device: torch.device) -> None:
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device {str(device)!r} asked for, but torch sees no CUDA device on this machine: "
            "use 'auto' (CUDA when there is one, else the CPU) or 'cpu'"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(
            f"device {str(device)!r} asked for, but this machine has {count} CUDA device(s): cuda:0"
            + (f" to cuda:{count - 1}" if count > 1 else "")
        )
