"""How an export points at a job's images, so that the next tool opens them: the image URIs
as the job read them (relative paths against its input directory, only under its allowed
prefixes), made relative to an images root (`--images-root`: COCO `file_name`, YOLO-seg's
links) or served by Label Studio from its document root (`--label-studio-root`:
`/data/local-files/?d=<path under the root>`); and, for an export that can point at none of
its images, which column would have given their paths."""

import os
import urllib.parse
from dataclasses import dataclass
from typing import List, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import JobConfig
from ..inputs.images import default_uri_prefixes, input_directory, resolve_image_uri
from ..output.handle import JobOutput
from ..storage import LABEL_STUDIO_LOCAL_FILES, Location, is_local, local_path, plain_path, uri_allowed

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")
_SAMPLE_ROWS = 20


@dataclass(frozen=True)
class ImageSources:
    """Where the job's image URIs may point (`allowed_prefixes`), the directory its relative
    paths are read against (`image_directory`) and the export's root (`root`, absolute, with
    its links resolved), if any."""

    allowed_prefixes: Sequence[str] = ()
    image_directory: Optional[str] = None
    root: Optional[str] = None

    @classmethod
    def of_job(cls, config: Optional[JobConfig], root: Optional[str] = None) -> "ImageSources":
        """The job's prefixes (input.allowed_uri_prefixes, else their default for its input) and
        input directory; no prefixes without the job's config (then no image is pointed at).
        `root`: an existing local directory, else ValueError."""
        if root is not None and (not is_local(root) or not os.path.isdir(plain_path(root))):
            raise ValueError(f"{root}: the images root must be an existing local directory")
        resolved = os.path.realpath(plain_path(root)) if root is not None else None
        if config is None:
            return cls((), None, resolved)
        prefixes = config.input.allowed_uri_prefixes
        return cls(list(prefixes) if prefixes is not None else default_uri_prefixes(config.input.path),
                   input_directory(Location(config.input.path, config.storage)), resolved)

    def source(self, uri: Optional[str]) -> Optional[str]:
        """The image URI as the job read it (None for an image named by its id); an absolute
        local path with its links resolved once, so that the path checked against the
        prefixes (`allowed`) is the path pointed at."""
        if uri is None:
            return None
        source = resolve_image_uri(uri, self.image_directory)
        return local_path(source) if is_local(source) and os.path.isabs(plain_path(source)) else source

    def allowed(self, source: str) -> bool:
        """Whether the job could read `source`: it lies under the allowed prefixes."""
        return uri_allowed(source, self.allowed_prefixes)

    def under_root(self, source: str) -> Optional[str]:
        """`source`'s path relative to the root ('/'-separated), when it is a local file under it."""
        if self.root is None or not is_local(source):
            return None
        path = os.path.realpath(plain_path(source))
        if os.path.commonpath([path, self.root]) != self.root:
            return None
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def label_studio_url(self, source: str) -> str:
        """What Label Studio opens: object-store and HTTP URIs as they are (its cloud storage
        or the web serves them), a local file under the root as a local-files URL."""
        relative = self.under_root(source)
        if relative is None:
            return source
        return LABEL_STUDIO_LOCAL_FILES + urllib.parse.quote(relative, safe="/")


class NoImageToPointAt(ValueError):
    """An export found none of its images to link or name (`no_image_advice` says why)."""


def no_image_advice(output: JobOutput, config: Optional[JobConfig], image_column: Optional[str]) -> str:
    """Why an export found no image to point at, and which column would have given paths: one
    of the output's, else one of the job's input that the output does not keep."""
    if image_column is not None:
        reason = f"the column {image_column!r} names no image file under the job's allowed URI prefixes"
    elif config is not None and config.input.image_column:
        reason = f"the job read its images as bytes (input.image_column {config.input.image_column!r}), so its " \
                 "output names images by id"
    else:
        reason = "the output names images by id (no image-URI column)"
    files = output.result_files().files
    in_output = _path_columns(output.location, files[:1], exclude=image_column)
    if in_output:
        return f"{reason}; the output's column {in_output[0]!r} holds image paths: --image-column {in_output[0]}"
    if config is not None:
        location = Location(config.input.path, config.storage)
        try:
            in_input = _path_columns(location, location.parquet_files()[:1], exclude=None)
        except FileNotFoundError:
            in_input = []
        if in_input:
            return (f"{reason}; the job's input column {in_input[0]!r} holds image paths, which the output does not "
                    f"keep: run the job with input.image_uri_column: {in_input[0]} (images read from those files) "
                    f"or input.passthrough_columns: [{in_input[0]}], then export with --image-column {in_input[0]}")
    return f"{reason}; give the job's input a column of image paths or URIs (input.image_uri_column)"


def _path_columns(location: Location, files: List[str], exclude: Optional[str]) -> List[str]:
    """String columns of the first file whose first rows look like image paths or URIs."""
    found: List[str] = []
    for path in files:
        with location.fs.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            names = [field.name for field in parquet.schema_arrow
                     if (pa.types.is_string(field.type) or pa.types.is_large_string(field.type))
                     and field.name != exclude]
            if not names or parquet.metadata.num_rows == 0:
                continue
            batch = next(parquet.iter_batches(batch_size=_SAMPLE_ROWS, columns=names))
            for name in names:
                values = [v for v in pc.drop_null(batch.column(name)).to_pylist() if isinstance(v, str)]
                if values and all(v.lower().rsplit("?", 1)[0].endswith(_IMAGE_EXTENSIONS) for v in values):
                    found.append(name)
    return found


__all__ = ["ImageSources", "NoImageToPointAt", "no_image_advice"]
