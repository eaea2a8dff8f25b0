"""Why a hit matched: which query word aligned best with which region of the image.

The rerank reduces the alignment matrix A[i, j] = <w_i, r_j> (words x regions) to one score;
this module keeps it whole for one (query, image) pair, with each word's best region and,
for a model whose front end cuts the image into a grid, the boxes of the regions (the
paper's figures draw them over the image). It also gives the pair's score as search ranks
it: the alignment score, less the image's query-bank normaliser when search applies one,
so the words' values can be read against the hit's score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from teran_es.model.alignment import alignment_matrix, pairwise_scores
from teran_es.searcher import Searcher


@dataclass
class WordAlignment:
    word: str
    region: int  # the best-aligned region
    score: float  # <w, r> of that region


@dataclass
class AlignmentView:
    query: str
    image_id: str
    words: list[WordAlignment]
    matrix: list[list[float]]  # [W, R]: word i with region j
    boxes: list[list[float]] | None  # [R, 4] (x1, y1, x2, y2) in [0, 1]; None when unknown
    alignment: float  # the model's score of the pair (for MrSw, the sum of the words' best values)
    normaliser: float | None  # the image's query-bank normaliser, when search subtracts one
    score: float  # the score search ranks by: alignment less the normaliser

    def to_dict(self) -> dict:
        return asdict(self)


def best_regions(matrix: torch.Tensor) -> tuple[list[int], list[float]]:
    """For a [W, R] matrix: the argmax region of each word (lowest index on ties) and its value."""
    values, regions = matrix.max(dim=1)
    return regions.tolist(), values.tolist()


def word_region_alignment(searcher: Searcher, text: str, image_id: str) -> AlignmentView:
    """The alignment of ``text``'s scored words with ``image_id``'s regions (UnknownImageError, QueryError)."""
    from teran_es.image_search import stored_regions

    regions, region_mask = stored_regions(searcher, image_id)
    words, word_mask = searcher.encode_query(text)
    tokens = searcher.model.tokenize([text])
    kept = word_mask[0].cpu()
    pieces = searcher.model.tokenizer.convert_ids_to_tokens(tokens["input_ids"][0][kept].tolist())
    full = alignment_matrix(words.cpu()[:, kept], regions.float().cpu()[:, region_mask[0]])[0, 0]  # [W, R]
    best, values = best_regions(full)
    config = searcher.model.config
    alignment = float(pairwise_scores(regions.float().cpu(), region_mask.cpu(), words.float().cpu(), word_mask.cpu(),
                                      kind=config.score, padding=config.padding)[0, 0])
    normaliser = None
    if searcher.normalisers is not None:
        searcher.normalisers.ensure([image_id], searcher.store, searcher.config.search.batch_size)
        normaliser = searcher.normalisers.values[image_id]
    boxes = None
    frontend = searcher.model.frontend
    if frontend is not None:
        grid = frontend.region_boxes(region_mask.shape[1])
        if grid is not None:
            boxes = grid[region_mask[0].cpu()].tolist()
    return AlignmentView(
        query=text,
        image_id=image_id,
        words=[WordAlignment(w, r, v) for w, r, v in zip(pieces, best, values, strict=True)],
        matrix=full.tolist(),
        boxes=boxes,
        alignment=alignment,
        normaliser=normaliser,
        score=alignment - (normaliser or 0.0),
    )
