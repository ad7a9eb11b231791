"""The machinery every config file shares: sections of strictly typed keys (pydantic), parsed
with every problem collected and worded as `section.key: what is wrong`."""

import difflib
import re
from typing import Any, ClassVar, Dict, Iterable, List, Mapping, Optional, Tuple, Type, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from ..text import clipped
from .errors import ConfigError
from .yaml_source import read_yaml

S = TypeVar("S", bound="Section")
C = TypeVar("C", bound="Sections")
# Keys that would put credentials into a config file.
_CREDENTIAL_KEYS = {"key", "secret", "token", "hf_token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
                    "access_key", "secret_key", "password"}
_CROSS_CHECK = "cross_check"
_EXPECTED = {"string_type": "a string", "int_type": "an integer", "float_type": "a number", "bool_type": "true/false",
             "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping"}


class Section(BaseModel):
    """One section of a config file (`section` names it there). Keys are strictly typed (no
    "4" for 4) and unknown keys are errors. `cross_checks` finds what single keys cannot say
    (keys that contradict each other); it also runs on the raw mapping when some keys are
    wrong, so that every problem is reported at once."""

    model_config = ConfigDict(extra="forbid", strict=True)
    section: ClassVar[str]
    # Where the credentials of a section that reaches a service come from instead of the
    # config: a credential key there (_CREDENTIAL_KEYS) is refused with this hint.
    credentials_from: ClassVar[Optional[str]] = None

    @classmethod
    def cross_checks(cls, values: Mapping[str, Any]) -> List[str]:
        return []

    @model_validator(mode="after")
    def _check_together(self: S) -> S:
        problems = type(self).cross_checks(self.model_dump())
        if problems:
            raise PydanticCustomError(_CROSS_CHECK, "; ".join(problems))
        return self


class Sections(BaseModel):
    """A config file: a mapping of sections (each a `Section` field)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def cross_section_checks(cls, sections: Mapping[str, "Section"]) -> List[str]:
        """What keys of different sections say against each other, from the sections that
        parsed (by name; a section with problems of its own is absent)."""
        return []

    def to_dict(self) -> Dict[str, Any]:
        """As plain JSON data (what `parse` takes back)."""
        return self.model_dump(mode="json")

    @classmethod
    def load(cls: Type[C], path: str, overrides: Optional[List[str]] = None) -> C:
        """From a YAML file, with `key.sub=value` overrides (values parsed as YAML) applied."""
        return cls.parse(read_yaml(path, overrides))

    @classmethod
    def parse(cls: Type[C], data: Mapping[str, Any]) -> C:
        """From plain data (as read from YAML), with every problem collected into one ConfigError."""
        problems: List[str] = []
        sections: Dict[str, Section] = {}
        known = cls.model_fields
        for name in data:
            if name not in known:
                problems.append(f"unknown section {clipped(name)}{did_you_mean(str(name), known)} (known: {', '.join(known)})")
        for name, info in known.items():
            section_cls = info.annotation
            assert isinstance(section_cls, type) and issubclass(section_cls, Section)
            raw = data.get(name)
            if raw is None:
                if info.is_required():
                    required = [k for k, f in section_cls.model_fields.items() if f.is_required()]
                    problems.append(f"missing section {name!r} (required keys: {', '.join(required)})")
                    continue
                raw = {}
            if not isinstance(raw, dict):
                problems.append(f"{name}: must be a mapping, got {type(raw).__name__}")
                continue
            parsed, found = _parse_section(section_cls, raw)
            problems += found
            if parsed is not None:
                sections[name] = parsed
        problems += cls.cross_section_checks(sections)
        if problems:
            raise ConfigError(problems)
        return cls(**sections)


def _parse_section(cls: Type[Section], raw: Dict[str, Any]) -> Tuple[Optional[Section], List[str]]:
    problems = []
    if cls.credentials_from is not None:
        for key in [k for k in raw if isinstance(k, str) and k.lower() in _CREDENTIAL_KEYS]:
            problems.append(f"{cls.section}.{key}: credentials must not be in the config; {cls.credentials_from}")
            raw = {k: v for k, v in raw.items() if k != key}
    try:
        parsed: Optional[Section] = cls.model_validate(raw)
    except ValidationError as e:
        parsed = None
        errors = [error for error in e.errors() if error["type"] != _CROSS_CHECK]
        unknown = [str(error["loc"][0]) for error in errors if error["type"] == "extra_forbidden"]
        # A misspelt key is the cause of the missing key it stands for: it is named first.
        errors.sort(key=lambda error: error["type"] != "extra_forbidden")
        problems += [_problem(cls, error, unknown) for error in errors]
    return parsed, problems + cls.cross_checks(raw)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the choice closest to a misspelt `word`, or "" when none is close."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _problem(cls: Type[Section], error: Any, unknown_keys: List[str]) -> str:
    """One pydantic error as `section.key: what is wrong`; `unknown_keys`: the section's keys
    that are no keys of it (a missing key may be one of them, misspelt)."""
    loc, kind, section = error["loc"], error["type"], cls.section
    where = f"{section}.{loc[0]}" + "".join(f"[{part}]" for part in loc[1:]) if loc else section
    if kind == "missing":
        typo = difflib.get_close_matches(str(loc[0]), unknown_keys, n=1, cutoff=0.6)
        return f"{section}: missing required key {loc[0]!r}" + (f" (is {clipped(typo[0])} it, misspelt?)" if typo else "")
    if kind == "extra_forbidden":
        return (f"{section}: unknown key {clipped(loc[0])}{did_you_mean(str(loc[0]), cls.model_fields)} "
                f"(known: {', '.join(cls.model_fields)})")
    if kind in _EXPECTED:
        return f"{where}: expected {_EXPECTED[kind]}, got {clipped(error['input'])}"
    if kind in ("literal_error", "enum"):
        values = re.findall(r"'([^']*)'", error["ctx"]["expected"])
        hint = did_you_mean(error["input"], values) if isinstance(error["input"], str) else ""
        return f"{where}: must be one of {error['ctx']['expected']}, got {clipped(error['input'])}{hint}"
    if kind == "greater_than_equal":
        return f"{where}: must be >= {error['ctx']['ge']}"
    if kind == "greater_than":
        return f"{where}: must be > {error['ctx']['gt']}"
    return f"{where}: {error['msg']}"
