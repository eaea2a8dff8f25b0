"""The TERAN model: visual and textual pipelines, shared reasoning layers, alignment score.

The two pipelines never mix before the score, so region vectors can be computed offline
(``encode_images``) and word vectors at query time (``encode_texts``).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from teran_es.config import ModelConfig
from teran_es.errors import ConfigError
from teran_es.model.alignment import PADDINGS, SCORE_KINDS, pairwise_scores
from teran_es.model.bank import QueryBank
from teran_es.model.efficientnet import EfficientNetLite
from teran_es.model.grid_cnn import GridRegionEncoder
from teran_es.model.pretrained_frontend import (
    PRETRAINED_FRONTENDS,
    PretrainedRegions,
    build_pretrained_frontend,
)
from teran_es.model.records import ImageEmbeddings, TextEmbeddings
from teran_es.model.textual import (
    TextEncoder,
    backbone_from_config,
    freeze_backbone,
    load_text_backbone,
    word_mask,
)
from teran_es.model.visual import VisualEncoder, transformer_encoder

FRONTENDS = ("none", "grid-cnn", *PRETRAINED_FRONTENDS)


class TERAN(nn.Module):
    """TERAN (Messina et al., 2021). See docs/teran.md.

    ``text_backbone``: a BERT-family model to use as is (e.g. built from a
    ``transformers.BertConfig``); when None it is loaded, with its tokenizer, from
    ``config.text_backbone`` (a local directory; "" = the bundled MiniLM-L6). The backbone
    is truncated to ``config.text_layers`` layers in place, and frozen as
    ``config.text_trainable_layers`` says.

    With ``config.frontend = "grid-cnn"`` the model also takes raw pixels
    (:meth:`encode_pixels`): a small CNN, trained jointly, turns them into grid regions. With
    ``config.frontend = "efficientnet-lite0"`` a pretrained, frozen EfficientNet-Lite0 does;
    ``frontend_network`` replaces its package weights (e.g. a tiny random network in tests).
    """

    def __init__(
        self,
        config: ModelConfig,
        text_backbone: transformers.PreTrainedModel | None = None,
        tokenizer=None,
        frontend_network: EfficientNetLite | None = None,
    ):
        super().__init__()
        if config.score not in SCORE_KINDS:
            raise ConfigError(f"unknown score kind {config.score!r} (known: {', '.join(SCORE_KINDS)})")
        if config.padding not in PADDINGS:
            raise ConfigError(f"unknown padding {config.padding!r} (known: {', '.join(PADDINGS)})")
        if config.frontend not in FRONTENDS:
            raise ConfigError(f"unknown frontend {config.frontend!r} (known: {', '.join(FRONTENDS)})")
        if text_backbone is None:
            text_backbone, loaded_tokenizer = load_text_backbone(config.text_backbone)
            tokenizer = tokenizer if tokenizer is not None else loaded_tokenizer
        self.config = dataclasses.replace(config)
        self.tokenizer = tokenizer
        # training captions whose soft maximum offsets each image at search (model/bank.py);
        # not a weight: the checkpoint keeps it in a file of its own
        self.query_bank: QueryBank | None = None
        self.visual = VisualEncoder(config)
        self.textual = TextEncoder(config, text_backbone)
        freeze_backbone(self.textual.backbone, config.text_trainable_layers)
        self.frontend: GridRegionEncoder | PretrainedRegions | None = None
        if config.frontend == "grid-cnn":
            self.frontend = GridRegionEncoder(
                config.region_feature_dim, grid=config.frontend_grid, width=config.frontend_width
            )
        elif config.frontend in PRETRAINED_FRONTENDS:
            self.frontend = build_pretrained_frontend(
                config.frontend,
                config.frontend_block,
                config.frontend_grid,
                config.frontend_trainable_blocks,
                network=frontend_network,
            )
            if self.frontend.feature_dim != config.region_feature_dim:
                raise ConfigError(
                    f"model.frontend = {config.frontend!r} gives {self.frontend.feature_dim}-d regions after "
                    f"block {config.frontend_block}; set model.region_feature_dim = {self.frontend.feature_dim}"
                )

        def reasoning() -> nn.TransformerEncoder | None:
            if config.reasoning_layers == 0:
                return None
            return transformer_encoder(
                config.embed_dim,
                config.reasoning_heads,
                config.reasoning_ff_dim,
                config.reasoning_layers,
                config.dropout,
            )

        if config.shared_reasoning:
            self.reasoning = reasoning()
        else:
            self.image_reasoning = reasoning()
            self.text_reasoning = reasoning()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def text_backbone_frozen(self) -> bool:
        """True when no weight of the text backbone is trained."""
        return not any(p.requires_grad for p in self.textual.backbone.parameters())

    def train(self, mode: bool = True) -> TERAN:
        """As ``nn.Module.train``, but a wholly frozen text backbone stays in eval mode: no
        dropout, so training sees the same word features as search does."""
        super().train(mode)
        if mode and self.text_backbone_frozen:
            self.textual.backbone.eval()
        return self

    def _reason(self, vectors: torch.Tensor, sequence_mask: torch.Tensor, modality: str) -> torch.Tensor:
        """Shared (or per-modality) layers over [B, L, D] with padding mask, then L2 normalisation."""
        if self.config.shared_reasoning:
            layers = self.reasoning
        else:
            layers = self.image_reasoning if modality == "image" else self.text_reasoning
        if layers is not None:
            vectors = layers(vectors, src_key_padding_mask=~sequence_mask)
        return F.normalize(vectors, p=2, dim=-1)

    def encode_images(
        self, features: torch.Tensor, boxes: torch.Tensor, region_mask: torch.Tensor
    ) -> ImageEmbeddings:
        """features [B, R, F], boxes [B, R, 4] in [0, 1], region_mask bool [B, R] -> ImageEmbeddings
        (regions [B, R, D] L2-normalised, mask [B, R], global_vec [B, D])."""
        expected = self.config.region_feature_dim
        if features.dim() != 3 or features.shape[2] != expected:
            raise ValueError(f"features must be [B, R, {expected}], got {tuple(features.shape)}")
        if boxes.shape != features.shape[:2] + (4,) or region_mask.shape != features.shape[:2]:
            raise ValueError(
                f"boxes {tuple(boxes.shape)} and region_mask {tuple(region_mask.shape)} must be "
                f"[B, R, 4] and [B, R] for features {tuple(features.shape)}"
            )
        region_mask = region_mask.bool()
        projected, sequence_mask = self.visual(features, boxes, region_mask)
        vectors = self._reason(projected, sequence_mask, "image")
        return ImageEmbeddings(regions=vectors[:, 1:], mask=region_mask, global_vec=vectors[:, 0])

    def image_regions(
        self,
        *,
        pixels: torch.Tensor | None = None,
        trunk_maps: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        region_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The regions the visual layers take, from whichever form a batch of images comes in:
        ``pixels`` [B, 3, S, S] (uint8, or float in [0, 1]) through the front end, a pretrained
        front end's cached ``trunk_maps`` [B, C, h, w] through its fine-tuned tail, or region
        ``features`` [B, R, F] with ``boxes`` and ``region_mask`` as given.
        -> (features [B, R, F], boxes [B, R, 4], region_mask bool [B, R]); every cell of a
        front end's grid is a region, so its mask is all true."""
        if pixels is not None:
            if self.frontend is None:
                raise ValueError(
                    "this model has no image front end (model.frontend = 'none'): it takes region "
                    "features; extract them first (teran_es.features.extractors)"
                )
            if pixels.dim() != 4 or pixels.shape[1] != 3:
                raise ValueError(f"pixels must be [B, 3, S, S], got {tuple(pixels.shape)}")
            grid, grid_boxes = self.frontend(pixels)
        elif trunk_maps is not None:
            if not isinstance(self.frontend, PretrainedRegions):
                raise ValueError("trunk maps are for a model with a pretrained front end (model.frontend)")
            grid, grid_boxes = self.frontend.tail(trunk_maps)
        elif features is not None and boxes is not None and region_mask is not None:
            return features, boxes, region_mask.bool()
        else:
            raise ValueError("give pixels, trunk_maps, or features, boxes and region_mask")
        return grid, grid_boxes, torch.ones(grid.shape[:2], dtype=torch.bool, device=grid.device)

    def encode_image_inputs(self, **inputs: torch.Tensor | None) -> ImageEmbeddings:
        """ImageEmbeddings of a batch given in any form :meth:`image_regions` takes."""
        return self.encode_images(*self.image_regions(**inputs))

    def encode_pixels(self, pixels: torch.Tensor) -> ImageEmbeddings:
        """pixels [B, 3, S, S] (uint8, or float in [0, 1]) -> ImageEmbeddings through the front end."""
        return self.encode_image_inputs(pixels=pixels)

    def encode_trunk_maps(self, maps: torch.Tensor) -> ImageEmbeddings:
        """The cached maps of the front end's frozen trunk [B, C, h, w] -> ImageEmbeddings
        through its fine-tuned tail (region_cache.cached_trunk_set); equal to encode_pixels."""
        return self.encode_image_inputs(trunk_maps=maps)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextEmbeddings:
        """input_ids [B, T], attention_mask [B, T] -> TextEmbeddings (words [B, T, D]
        L2-normalised, mask bool [B, T] of the word pieces that are scored, global_vec [B, D])."""
        return self.encode_text_states(self.textual.backbone_states(input_ids, attention_mask), attention_mask)

    def encode_text_states(self, states: torch.Tensor, attention_mask: torch.Tensor) -> TextEmbeddings:
        """Like :meth:`encode_texts`, from the text backbone's hidden states [B, T, hidden]
        (e.g. computed once for a frozen backbone: teran_es.model.text_cache)."""
        projected = self.textual.from_states(states, attention_mask)
        vectors = self._reason(projected, attention_mask.bool(), "text")
        mask = word_mask(attention_mask, self.config.exclude_last_word)
        return TextEmbeddings(words=vectors, mask=mask, global_vec=vectors[:, 0])

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Sentences -> {"input_ids", "attention_mask"} [B, T] (T <= config.max_words, [CLS]/[SEP] included)."""
        if self.tokenizer is None:
            raise RuntimeError(
                "this model has no tokenizer; pass one to TERAN(...) or load a checkpoint that has one"
            )
        self.tokenizer.padding_side = "right"  # word_mask assumes right padding
        encoded = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_words, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def encode_sentences(self, texts: list[str]) -> TextEmbeddings:
        """Tokenize and encode on the model's device."""
        batch = self.tokenize(texts)
        return self.encode_texts(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))

    def score(
        self,
        images: ImageEmbeddings,
        texts: TextEmbeddings,
        kind: str | None = None,
        padding: str | None = None,
    ) -> torch.Tensor:
        """Alignment scores [N, M] (images x sentences) with the model's score kind and padding."""
        return pairwise_scores(
            images.regions,
            images.mask,
            texts.words,
            texts.mask,
            kind=kind or self.config.score,
            padding=padding or self.config.padding,
        )

    def forward(
        self,
        features: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        region_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_embeddings: bool = False,
        pixels: torch.Tensor | None = None,
        text_states: torch.Tensor | None = None,
        trunk_maps: torch.Tensor | None = None,
    ):
        """The B x B score matrix of a training batch (row = image, column = sentence).

        Images come as region features (``features``, ``boxes``, ``region_mask``) or, for a
        model with a front end, as ``pixels`` (or, for a pretrained one, its frozen trunk's
        cached ``trunk_maps``). ``text_states``: the text backbone's hidden states of
        ``input_ids``, when already computed. With ``return_embeddings``: (scores,
        ImageEmbeddings, TextEmbeddings), e.g. for the global-vector loss.
        """
        if input_ids is None or attention_mask is None:
            raise ValueError("input_ids and attention_mask are required")
        images = self.encode_image_inputs(
            pixels=pixels, trunk_maps=trunk_maps, features=features, boxes=boxes, region_mask=region_mask
        )
        if text_states is not None:
            texts = self.encode_text_states(text_states, attention_mask)
        else:
            texts = self.encode_texts(input_ids, attention_mask)
        scores = self.score(images, texts)
        if return_embeddings:
            return scores, images, texts
        return scores


def build_model(
    config: ModelConfig,
    text_backbone: transformers.PreTrainedModel | transformers.PretrainedConfig | None = None,
    tokenizer=None,
    device: torch.device | str = "cpu",
    frontend_network: EfficientNetLite | None = None,
) -> TERAN:
    """A TERAN on ``device``; ``text_backbone`` may be a model, a transformers config
    (random initialisation, e.g. for tests) or None (load from ``config.text_backbone``);
    ``frontend_network`` replaces a pretrained front end's package weights."""
    if isinstance(text_backbone, transformers.PretrainedConfig):
        text_backbone = backbone_from_config(text_backbone)
    return TERAN(config, text_backbone=text_backbone, tokenizer=tokenizer, frontend_network=frontend_network).to(device)


def count_parameters(model: TERAN) -> dict[str, int]:
    """Parameter counts: total and per part (text backbone, rest of text, visual, reasoning)."""

    def size(module: nn.Module | None) -> int:
        return sum(p.numel() for p in module.parameters()) if module is not None else 0

    backbone = size(model.textual.backbone)
    frontend = size(model.frontend)
    counts = {
        "frontend": frontend,
        "visual": size(model.visual),
        "text_backbone": backbone,
        "text_head": size(model.textual) - backbone,
        "reasoning": size(model) - size(model.visual) - size(model.textual) - frontend,
    }
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counts["total"] = size(model)
    return counts
