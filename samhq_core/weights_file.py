"""A weights file's format and tensors: torch.save's (zip or legacy pickle, always read with
`weights_only=True`, so that a checkpoint never executes code) or safetensors, whose header
is checked against the file's size before any tensor is read."""

import json
import math
import os
import warnings
from typing import IO, Dict, List, Tuple

import torch
from safetensors.torch import load_file

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE = b"\x80"  # torch.save's legacy (pre-zip) format is a pickle (protocol 2 or later)
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}
_KNOWN_MAGIC = {b"\xff\xd8\xff": "a JPEG image", b"\x89PNG": "a PNG image", b"\x1f\x8b": "a gzip file",
                b"PAR1": "a Parquet file", b"<": "an HTML or XML document", b"{": "a JSON document"}


def weights_format(f: IO[bytes], src: str) -> str:
    """A weights file's format, from its first bytes.

    Arguments:
      f (IO[bytes]): the open file, left at offset 0.
      src (str): the file's name, for messages.

    Returns:
      (str): "torch" (torch.save's zip or legacy pickle format) or "safetensors".

    Raises:
      ValueError: naming what the file looks like otherwise.
    """
    head = f.read(16)
    f.seek(0)
    # safetensors first: its 8-byte header length may begin with the pickle marker (0x80).
    if len(head) >= 10 and head[8:10] == b'{"':
        return "safetensors"
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE):
        return "torch"
    looks_like = next((what for magic, what in _KNOWN_MAGIC.items() if head.startswith(magic)), None)
    raise ValueError(f"{src} is not a PyTorch (.pth) or safetensors checkpoint: it starts with bytes "
                     f"{head[:8].hex(' ') or '(none: the file is empty)'}" + (f", like {looks_like}" if looks_like else ""))


def read_header_tensors(f: IO[bytes], src: str) -> Dict[str, torch.Tensor]:
    """The tensors of a weights file as meta tensors: shapes and dtypes, no data.

    Arguments:
      f (IO[bytes]): the open weights file.
      src (str): its name, for messages.

    Returns:
      (dict): tensor name -> meta tensor.

    Raises:
      ValueError: for a file that is no loadable checkpoint (truncated, corrupted, not a state
        dict of tensors, or a safetensors header that does not fit the file).
    """
    if weights_format(f, src) == "safetensors":
        return {name: torch.empty(shape, dtype=dtype, device="meta")
                for name, (dtype, shape) in safetensors_header(f, src).items()}
    try:
        # torch's warnings about odd pickle protocols would print a second line beside the one error
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(f, map_location="meta", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means it is not a loadable state dict
        # torch's own text runs on for sentences (miniz's advice, the weights_only options): its first one
        reason = str(e).strip().split("\n")[0].split(". ")[0]
        raise ValueError(f"{src} is not a loadable PyTorch checkpoint: the file is truncated or corrupted, or holds "
                         "more than tensors (weights_only loading refuses that); download it again "
                         f"({type(e).__name__}{': ' + reason if reason else ''})") from None
    return state_dict_of(state, src)


def safetensors_header(f: IO[bytes], src: str) -> Dict[str, Tuple[torch.dtype, List[int]]]:
    """Each tensor's dtype and shape from a safetensors file's header, once the bytes its
    data_offsets name are checked to fit its dtype and shape and to lie inside the file: a
    truncated file or a forged header fails here, from the header and the file's size alone
    (seeking to the end of an fsspec file reads nothing), not when the weights are loaded.

    Arguments:
      f (IO[bytes]): the open safetensors file.
      src (str): its name, for messages.

    Returns:
      (dict): tensor name -> (dtype, shape).

    Raises:
      ValueError: naming the first tensor whose offsets do not fit, or a malformed header.
    """
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(0)
    header_size = int.from_bytes(f.read(8), "little")
    refetch = "the file is truncated or was not written by safetensors; download it again"
    if 8 + header_size > size:
        raise ValueError(f"{src}: its safetensors header ({header_size} bytes) runs past the end of the file "
                         f"({size} bytes): {refetch}")
    try:
        header = json.loads(f.read(header_size))
        entries = {name: (_SAFETENSORS_DTYPES[entry["dtype"]], [int(n) for n in entry["shape"]],
                          [int(n) for n in entry["data_offsets"]])
                   for name, entry in header.items() if name != "__metadata__"}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{src} has a malformed safetensors header: {type(e).__name__}: {e}") from None
    for name, (dtype, shape, offsets) in entries.items():
        nbytes = math.prod(shape) * dtype.itemsize
        if len(offsets) != 2 or not 0 <= offsets[0] <= offsets[1] or offsets[1] - offsets[0] != nbytes:
            raise ValueError(f"{src}: tensor {name!r} has data_offsets {offsets}, not the {nbytes} bytes of its "
                             f"shape {shape} and dtype {dtype}: {refetch}")
        if 8 + header_size + offsets[1] > size:
            raise ValueError(f"{src}: tensor {name!r} has data_offsets {offsets} past the end of the file "
                             f"({size} bytes): {refetch}")
    return {name: (dtype, shape) for name, (dtype, shape, _) in entries.items()}


def state_dict_of(state: object, src: str) -> Dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint (some wrap it in {"model": ...}).

    Arguments:
      state (object): what torch.load returned.
      src (str): the file's name, for messages.

    Returns:
      (dict): tensor name -> tensor.

    Raises:
      ValueError: when it is not a state dict of tensors.
    """
    if isinstance(state, dict) and set(state) in ({"model"}, {"state_dict"}):
        state = next(iter(state.values()))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{src} is not a state dict of tensors")
    return state


def read_weights(path: str, map_location: str) -> Dict[str, torch.Tensor]:
    """Every tensor of a local weights file.

    Arguments:
      path (str): the file (.pth / .pt / .bin of torch.save, or .safetensors).
      map_location (str): the device to load the tensors on.

    Returns:
      (dict): tensor name -> tensor.

    Raises:
      ValueError: for a file that is no loadable checkpoint (see `read_header_tensors`).
    """
    with open(path, "rb") as f:
        safetensors = weights_format(f, path) == "safetensors"
        if safetensors:
            safetensors_header(f, path)  # safetensors' own error for a truncated file names neither file nor tensor
    if safetensors:
        return load_file(path, device=map_location)
    return state_dict_of(torch.load(path, map_location=map_location, weights_only=True), path)
