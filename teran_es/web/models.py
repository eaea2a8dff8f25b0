"""The JSON of the API, typed (pydantic): what each endpoint returns, and the limits of its inputs."""

from __future__ import annotations

from pydantic import BaseModel, Field

MAX_QUERY_CHARS = 500
MAX_K = 100
MAX_CANDIDATES = 10_000
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
THUMBNAIL_SIZES = (128, 384)


class ErrorBody(BaseModel):
    status: int
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class SearchHit(BaseModel):
    rank: int
    id: str
    score: float
    path: str | None = None
    caption: str | None = None
    thumbnail: str = Field(description="URL of the hit's thumbnail")


class SearchResponse(BaseModel):
    query: str
    k: int
    candidates: int = Field(description="images reranked exactly (the whole collection with exact=true)")
    exact: bool
    hits: list[SearchHit]
    timings: dict[str, float] = Field(description="seconds per stage: encode, recall, rerank, fetch")
    message: str = ""
    bank_normalised: bool = Field(
        default=False,
        description="scores are the alignment less each image's query-bank normaliser (a model with a bank)",
    )


class ImageResponse(BaseModel):
    id: str
    captions: list[str]
    split: str = ""
    path: str | None = None
    thumbnail: str
    image: str = Field(description="URL of a larger rendering")
    attribution: str | None = None


class WordRegion(BaseModel):
    word: str
    region: int
    score: float


class AlignmentResponse(BaseModel):
    query: str
    image_id: str
    words: list[WordRegion]
    matrix: list[list[float]] = Field(description="[words x regions] alignment <word, region>")
    boxes: list[list[float]] | None = Field(description="[regions x 4] (x1, y1, x2, y2) in [0, 1], if known")
    alignment: float = Field(description="the model's alignment score of the pair (MrSw: the words' best values summed)")
    normaliser: float | None = Field(description="the image's query-bank normaliser, when search subtracts one")
    score: float = Field(description="the score search ranks this image by: alignment less the normaliser")


class CaptionHitModel(BaseModel):
    rank: int
    image_id: str
    caption: str
    score: float
    thumbnail: str


class CaptionSearchResponse(BaseModel):
    image: str
    captions: int = Field(description="captions scanned")
    hits: list[CaptionHitModel]
    timings: dict[str, float]


class BackendHealth(BaseModel):
    kind: str
    index: str
    state: str = Field(description="ok or unavailable")
    documents: int | None = None
    message: str = ""


class HealthResponse(BaseModel):
    status: str = Field(description="ok, or degraded when the index cannot be reached")
    model_fingerprint: str
    quantizer_fingerprint: str
    images: int = Field(description="images in the collection's feature store")
    captions: int = Field(description="captions the collection holds (search by image scans them)")
    backend: BackendHealth
    attribution: str | None = None
