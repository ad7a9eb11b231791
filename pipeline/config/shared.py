"""The sections the job and fine-tuning share: where a Parquet input's images and prompts are,
and how to reach object storage."""

import urllib.parse
from dataclasses import dataclass
from typing import Any, ClassVar, List, Literal, Mapping, Optional, Tuple

from pydantic import Field

from ..text import clipped
from .base import Section

BoxFormat = Literal["xyxy", "xywh", "cxcywh"]
HUB_CREDENTIALS = "set HF_TOKEN in the environment or run `hf auth login` (a Hugging Face Hub token)"


@dataclass(frozen=True)
class PromptColumns:
    """The input columns that hold a row's prompts, each a list with one entry per prompt
    (None: not given), and the config section that names them (for messages)."""

    section: str
    box_format: BoxFormat = "xyxy"
    boxes: Optional[str] = None
    points: Optional[str] = None
    point_labels: Optional[str] = None
    mask_prompts: Optional[str] = None

    @property
    def noun(self) -> str:
        """What a prompt is called in messages: "box" when boxes are the only prompts."""
        return "box" if [key for key, _ in self.named()] == [f"{self.section}.boxes_column"] else "prompt"

    def named(self) -> List[Tuple[str, str]]:
        """(config key, column) of each prompt column given, boxes first."""
        keys = (("boxes_column", self.boxes), ("points_column", self.points),
                ("point_labels_column", self.point_labels), ("mask_prompts_column", self.mask_prompts))
        return [(f"{self.section}.{key}", column) for key, column in keys if column is not None]


class ImageColumnsConfig(Section):
    """Where a Parquet input's images are, and the limits they are read within; its prompts'
    columns come from the sections built on it (`prompt_columns`)."""

    section: ClassVar[str] = "input"  # as the review page and the benchmarks name one of their own
    id_column: str = Field(description="Column identifying each row; copied to the output.")
    image_column: Optional[str] = Field(None, description="Column of encoded image bytes (PNG, JPEG, ...), or a "
                                                          "datasets Image column (struct<bytes, path>: the bytes, "
                                                          "else the path read as an image URI); set this or "
                                                          "image_uri_column.")
    image_uri_column: Optional[str] = Field(None, description="Column of image paths or URIs (any fsspec URL), read "
                                                              "by the decode tasks; set this or image_column.")
    box_format: BoxFormat = Field("xyxy", description="Box coordinates: xyxy (x1, y1, x2, y2), xywh (x, y, width, "
                                                      "height) or cxcywh (centre x, centre y, width, height).")
    max_image_bytes: int = Field(64 << 20, ge=1, description="Largest encoded image a row may have, in bytes; a "
                                                             "larger one is that row's error (image_read).")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest decoded image (width x height); a larger "
                                                                "one is that row's error before it is decoded. The "
                                                                "decode tasks' memory reservation grows with it.")
    read_timeout_s: float = Field(60.0, gt=0, description="Seconds an image read (image_uri_column) may take; a "
                                                          "slower one is that row's error.")
    jpeg_draft: bool = Field(False, description="Decode JPEGs of twice the model's input size or more at a "
                                                 "power-of-two reduction in the DCT domain: several times less CPU for "
                                                 "4K images, with pixels that differ from the official preprocessing "
                                                 "(mask IoU in bench/results/data_plane.md). Off: exact.")
    allowed_uri_prefixes: Optional[List[str]] = Field(
        None, description="Where image URIs (and a datasets Image column's paths) may point (URL or local path "
                          "prefixes). Default: the bucket of an "
                          "object-store input, or, for a local input, the directory above the input's "
                          "directory. A URI elsewhere is that row's error, so data cannot make the workers read "
                          "arbitrary local files or internal URLs.")

    def prompt_columns(self) -> PromptColumns:
        """The columns of the row's prompts."""
        raise NotImplementedError

    @property
    def image_source_column(self) -> str:
        """The column the images come from (encoded bytes or URIs)."""
        column = self.image_column or self.image_uri_column
        assert column is not None  # exactly one is set (cross_checks)
        return column

    @classmethod
    def cross_checks(cls, values: Mapping[str, Any]) -> List[str]:
        if (values.get("image_column") is None) == (values.get("image_uri_column") is None):
            return [f"{cls.section}: set exactly one of image_column (encoded bytes) or image_uri_column (URIs)"]
        return []


class ImageSourceConfig(ImageColumnsConfig):
    """Where a Parquet input's images and boxes are (fine-tuning's data): a box per prompt."""

    boxes_column: str = Field(description="Column with a list of boxes per row, in absolute pixels.")

    def prompt_columns(self) -> PromptColumns:
        return PromptColumns(self.section, self.box_format, boxes=self.boxes_column)


class StorageConfig(Section):
    """Object-store settings; credentials come only from the standard AWS environment
    variables, shared config files or instance roles, never from a config."""

    section: ClassVar[str] = "storage"
    credentials_from: ClassVar[Optional[str]] = ("set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment or "
                                                 "use an instance role")
    endpoint_url: Optional[str] = Field(None, description="S3-compatible endpoint (MinIO, SeaweedFS, R2, ...), "
                                                          "http(s)://host[:port], without credentials.")
    region: Optional[str] = Field(None, description="Object-store region.")
    anonymous: bool = Field(False, description="Unsigned requests (public buckets).")

    @classmethod
    def cross_checks(cls, values: Mapping[str, Any]) -> List[str]:
        endpoint = values.get("endpoint_url")
        if not isinstance(endpoint, str):
            return []
        problems = []
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            host = parts.netloc.rsplit("@", 1)[-1]
            shown = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
            problems.append(f"storage.endpoint_url: expected http://host[:port] or https://host[:port], got {clipped(shown)}")
        if parts.username is not None or parts.password is not None:
            problems.append("storage.endpoint_url: holds credentials (user:password@...); remove them and set "
                            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment or use an instance role")
        return problems
