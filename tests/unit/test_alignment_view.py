"""Each word's best region, against a loop."""

from __future__ import annotations

import torch

from teran_es.alignment_view import best_regions


def test_best_regions_is_the_argmax_of_each_row():
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(5, 7, generator=generator)
    regions, values = best_regions(matrix)
    for i in range(5):
        row = matrix[i].tolist()
        assert regions[i] == row.index(max(row)) and values[i] == max(row)


def test_ties_go_to_the_first_region():
    regions, values = best_regions(torch.tensor([[0.5, 0.9, 0.9], [1.0, 1.0, 0.0]]))
    assert regions == [1, 0] and values == [0.8999999761581421, 1.0]
