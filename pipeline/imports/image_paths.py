"""Where an imported image is: the reference a Label Studio task (`data.image`) or a COCO image
(`file_name`) holds, as the absolute path or URI the labelled Parquet keeps, so that
fine-tuning reads it wherever the Parquet is moved.

- `/data/local-files/?d=<path>`: Label Studio's URL of a file under its document root
  (`export --label-studio-root`), read back as `<--label-studio-root>/<path>`.
- `s3://`, `gs://`, `http(s)://` and the other URIs the job reads: kept as they are, unchecked
  (fine-tuning counts an image it cannot read as a skipped row).
- Absolute local paths: kept; relative ones are read against `directory` (COCO: --images-root,
  else the COCO file's directory).

A local image must exist. One that cannot be located is recorded (`missing`), so that the
import names them all before it writes anything."""

import os
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, List, Optional

from ..inputs.images import resolve_image_uri
from ..storage import LABEL_STUDIO_LOCAL_FILES, is_local, plain_path, uri_problem, within
from ..text import clipped, plural

# Label Studio serves the files uploaded into a project at this path, from its own data directory.
_LABEL_STUDIO_UPLOADS = "/data/upload/"
_SHOWN = 3


class _NotLocated(Exception):
    """Why an image reference names no image the import can point at."""


def _local_file(path: str, reference: str) -> str:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise _NotLocated(f"no file {path if path == reference else f'{reference} (read as {path})'}")
    return path


@dataclass
class ImageLocator:
    """`directory`: what relative references are read against (a path or URL); `label_studio_root`:
    Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, for its local-files URLs."""

    directory: str
    label_studio_root: Optional[str] = None
    missing: List[str] = field(default_factory=list)  # "<where>: <why>", one per image not located

    def locate(self, reference: Any, where: str) -> Optional[str]:
        """The image's absolute path or URI, or None (recorded in `missing`). `where` names the
        task or image in messages."""
        try:
            return self._resolve(reference)
        except _NotLocated as why:
            self.missing.append(f"{where}: {why}")
            return None

    def _resolve(self, reference: Any) -> str:
        if not isinstance(reference, str) or not reference:
            raise _NotLocated(f"no image reference ({clipped(reference)})")
        if reference.startswith(LABEL_STUDIO_LOCAL_FILES.split("?")[0]):
            return self._label_studio_file(reference)
        if reference.startswith(_LABEL_STUDIO_UPLOADS) and not os.path.isfile(reference):
            raise _NotLocated(f"{reference} was uploaded into Label Studio, which keeps it in its own data directory "
                              "(media/upload/): serve the images from its document root or a cloud storage instead, "
                              "or give their paths")
        problem = uri_problem(reference)
        if problem is not None:
            raise _NotLocated(problem)
        resolved = resolve_image_uri(reference, self.directory)
        if not is_local(resolved):
            return resolved
        return _local_file(plain_path(resolved), reference)

    def _label_studio_file(self, reference: str) -> str:
        relative = urllib.parse.parse_qs(urllib.parse.urlsplit(reference).query).get("d", [""])[0]
        if self.label_studio_root is None:
            raise _NotLocated(f"{reference} is a file Label Studio serves from its document root: give that "
                              "directory as --label-studio-root (its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)")
        root = os.path.abspath(plain_path(self.label_studio_root))
        path = os.path.normpath(os.path.join(root, relative))
        if not relative or not within(path, root):
            raise _NotLocated(f"{reference} names no file under the document root {root}")
        return _local_file(path, reference)

    def problem(self, advice: str) -> Optional[str]:
        """The error for the images not located, naming a few, with `advice`; None when all were."""
        if not self.missing:
            return None
        shown = "; ".join(self.missing[:_SHOWN]) + ("; ..." if len(self.missing) > _SHOWN else "")
        return f"{plural(len(self.missing), 'image')} cannot be located ({shown}), so nothing was written: {advice}"
