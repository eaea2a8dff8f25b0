"""The frozen text backbone's hidden states of a fixed set of captions, computed once.

A wholly frozen backbone (``text_trainable_layers = 0``) runs in eval mode, so a caption's
hidden states are the same every epoch: training looks them up instead of running the
backbone again, which was about a third of a CPU training step with MiniLM-L6 on OpenMoji.
Real tokens do not attend to padding, so a caption's states do not depend on the batch it
is padded into (equal up to float rounding); padded positions are zero here, and nothing
downstream reads them (the reasoning layers mask them, the score skips them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


class TextStateCache:
    """Token ids and backbone states of ``captions``, looked up by position in that list."""

    def __init__(self, ids: list[torch.Tensor], states: list[torch.Tensor], pad_id: int = 0):
        if len(ids) != len(states):
            raise ValueError(f"{len(ids)} token sequences but {len(states)} state sequences")
        self.ids = ids
        self.states = states
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return sum(s.numel() * s.element_size() for s in self.states)

    @classmethod
    def build(
        cls,
        token_batches: Sequence[dict[str, torch.Tensor]],
        backbone_states: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        pad_id: int = 0,
        device: torch.device | str = "cpu",
        progress: Callable[[int], None] | None = None,
    ) -> TextStateCache:
        """Run ``backbone_states(input_ids, attention_mask) -> [B, T, H]`` over tokenized
        batches (:func:`tokenize_in_batches`) and keep each caption's unpadded ids [T_i] and
        float32 states [T_i, H] on the CPU, in order."""
        ids: list[torch.Tensor] = []
        states: list[torch.Tensor] = []
        for tokens in token_batches:
            with torch.inference_mode():
                hidden = backbone_states(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
            hidden = hidden.float().cpu()
            lengths = tokens["attention_mask"].sum(dim=1).tolist()
            for row, length in enumerate(lengths):
                ids.append(tokens["input_ids"][row, :length].clone())
                states.append(hidden[row, :length].clone())
            if progress is not None:
                progress(len(lengths))
        return cls(ids, states, pad_id)

    def batch(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids`` [B, T], ``attention_mask`` [B, T] and ``text_states``
        [B, T, H] (zeros at padding) of the captions at ``positions``."""
        if len(positions) == 0:
            raise ValueError("no captions asked for")
        picked = [int(p) for p in positions]
        width = max(len(self.ids[p]) for p in picked)
        hidden = self.states[picked[0]].shape[1]
        input_ids = torch.full((len(picked), width), self.pad_id, dtype=self.ids[picked[0]].dtype)
        attention_mask = torch.zeros(len(picked), width, dtype=torch.long)
        text_states = torch.zeros(len(picked), width, hidden, dtype=torch.float32)
        for row, p in enumerate(picked):
            length = len(self.ids[p])
            input_ids[row, :length] = self.ids[p]
            attention_mask[row, :length] = 1
            text_states[row, :length] = self.states[p]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "text_states": text_states}


def tokenize_in_batches(
    captions: Sequence[str], tokenize: Callable[[list[str]], dict[str, torch.Tensor]], batch_size: int = 256
) -> list[dict[str, torch.Tensor]]:
    """``tokenize`` over ``captions``, ``batch_size`` at a time (each batch padded to its longest)."""
    return [tokenize(list(captions[s : s + batch_size])) for s in range(0, len(captions), batch_size)]
