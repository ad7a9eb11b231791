"""The columns a config names, checked against the input files' schemas: present, of a type
the job can read, and of one type across files (Ray Data cannot combine two)."""

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import pyarrow as pa

from ..schema import is_image_struct
from .input_files import InputFile, InputScan, SkippedFile


@dataclass(frozen=True)
class ColumnRule:
    """A column a config names, and what it must hold."""

    key: str  # the config key that names it, e.g. "input.boxes_column"
    column: str
    kind: str  # see _KIND_CHECKS


def type_name(t: pa.DataType) -> str:
    """An Arrow type as a short readable name: list<list<double>>, not Parquet's
    list<element: list<element: double>>."""
    if pa.types.is_fixed_size_list(t):
        return f"list<{type_name(t.value_type)}>[{t.list_size}]"
    if _is_list(t):
        return f"list<{type_name(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(f"{t.field(i).name}: {type_name(t.field(i).type)}" for i in range(t.num_fields)) + ">"
    return str(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def _check_boxes_type(t: pa.DataType) -> Optional[str]:
    if pa.types.is_null(t):
        return None
    if _is_list(t) and _is_list(t.value_type):
        box = t.value_type
        if pa.types.is_fixed_size_list(box) and box.list_size != 4:
            return f"boxes of {box.list_size} values; each box needs 4"
        if _is_number(box.value_type):
            return None
        return f"box values of type {box.value_type}; they must be numbers (integers or floats)"
    return "one box list per row is expected: a list of [4 numbers] (list<list<double>>)"


def _check_points_type(t: pa.DataType) -> Optional[str]:
    if pa.types.is_null(t):
        return None
    expected = "per row, per prompt, a list of [x, y] points is expected (list<list<list<double>>>)"
    if not (_is_list(t) and _is_list(t.value_type) and _is_list(t.value_type.value_type)):
        return expected
    point = t.value_type.value_type
    if pa.types.is_fixed_size_list(point) and point.list_size != 2:
        return f"points of {point.list_size} values; each point is [x, y]"
    if not _is_number(point.value_type):
        return f"point coordinates of type {point.value_type}; they must be numbers (integers or floats)"
    return None


def _check_point_labels_type(t: pa.DataType) -> Optional[str]:
    if pa.types.is_null(t) or (_is_list(t) and _is_list(t.value_type) and (
            pa.types.is_integer(t.value_type.value_type) or pa.types.is_null(t.value_type.value_type))):
        return None
    return "per row, per prompt, a list of integer labels (1 foreground, 0 background) is expected (list<list<int>>)"


def _check_mask_prompts_type(t: pa.DataType) -> Optional[str]:
    if _is_list(t) and (pa.types.is_binary(t.value_type) or pa.types.is_large_binary(t.value_type)):
        return None  # low-res logits
    if _check_masks_type(t) is None:
        return None
    return ("per row, per prompt, a mask prompt is expected: a COCO RLE {size: [h, w], counts} (list<struct>) or "
            "low-res logits as float32 bytes (list<binary>)")


def _check_masks_type(t: pa.DataType) -> Optional[str]:
    if pa.types.is_null(t):
        return None
    if _is_list(t) and pa.types.is_struct(t.value_type):
        names = {t.value_type.field(i).name for i in range(t.value_type.num_fields)}
        if {"size", "counts"} <= names:
            return None
    return "per row, a list of COCO RLE masks {size: [h, w], counts} (one per box) is expected"


_KIND_CHECKS: Dict[str, Callable[[pa.DataType], Optional[str]]] = {
    "any": lambda t: None,
    "id": lambda t: None if not (pa.types.is_nested(t) or pa.types.is_null(t))
    else "ids must be single values (strings or integers)",
    "image_bytes": lambda t: None if (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_null(t)
                                      or is_image_struct(t))
    else ("it holds strings: if they are image paths or URIs, set image_uri_column instead of image_column"
          if _is_string(t) else "encoded image bytes (binary) or a datasets Image column (struct<bytes: binary, "
                                "path: string>) are expected"),
    "image_uri": lambda t: None if _is_string(t)
    else ("it holds bytes: if they are encoded images, set image_column instead of image_uri_column"
          if pa.types.is_binary(t) or pa.types.is_large_binary(t) else "image paths or URIs (strings) are expected"),
    "boxes": _check_boxes_type,
    "categories": lambda t: None if pa.types.is_null(t) or (_is_list(t) and (_is_string(t.value_type) or
                                                                           _is_number(t.value_type)))
    else "per row, a list of categories (names or integer ids, one per box) is expected",
    "rle_masks": _check_masks_type,
    "points": _check_points_type,
    "point_labels": _check_point_labels_type,
    "mask_prompts": _check_mask_prompts_type,
}


def check_columns(scan: InputScan, rules: Iterable[ColumnRule], key: str) -> List[str]:
    """Problems with the configured columns, per distinct schema among the input's files:
    missing columns (with the columns present), wrong types, and a column whose type differs
    between files (Ray Data cannot merge those)."""
    by_schema: Dict[pa.Schema, List[InputFile]] = {}
    for file in scan.files:
        by_schema.setdefault(file.schema, []).append(file)
    total = len(scan.files)

    def where(files: List[InputFile]) -> str:
        return f"in {files[0].url}" if total == 1 else f"in {len(files)} of {total} files (e.g. {files[0].url})"

    problems = []
    for rule in rules:
        types: Dict[str, List[InputFile]] = {}
        for schema, files in by_schema.items():
            if rule.column not in schema.names:
                present = ", ".join(schema.names)
                problems.append(f"{rule.key}: no column {rule.column!r} {where(files)}; columns present: {present}")
                continue
            column_type = schema.field(rule.column).type
            reason = _KIND_CHECKS[rule.kind](column_type)
            if reason:
                problems.append(f"{rule.key}: column {rule.column!r} has type {type_name(column_type)} {where(files)}: "
                                f"{reason}")
            types.setdefault(type_name(column_type), []).extend(files)
        concrete = {t: files for t, files in types.items() if t != "null"}
        if len(concrete) > 1:
            listing = "; ".join(f"{t} {where(files)}" for t, files in concrete.items())
            problems.append(f"{rule.key}: column {rule.column!r} has different types across files ({listing}); "
                            "Ray Data cannot combine them: write the column with one type in every file")
    return problems


def skip_files_with_bad_columns(scan: InputScan, rules: Sequence[ColumnRule]) -> InputScan:
    """The scan without the files whose own columns fail `rules` (each listed as skipped)."""
    kept, skipped = [], list(scan.skipped)
    for file in scan.files:
        problems = check_columns(InputScan(scan.location, [file]), rules, "input.path")
        if problems:
            skipped.append(SkippedFile(file.url, "; ".join(p.split(": ", 1)[1] for p in problems)))
        else:
            kept.append(file)
    return InputScan(scan.location, kept, skipped)
