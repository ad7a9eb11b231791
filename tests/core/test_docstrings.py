"""The public API of samhq_core is documented as segment-anything's is: every public method
and function in scope has an "Arguments:" section when it takes arguments (besides self or
cls) and a "Returns:" section unless it returns None, so that a caller learns every argument's
type and tensor shape, and what comes back, from the docstring alone.

In scope: the model, processor and config classes (methods inherited from samhq_core classes
included), the main modules of `samhq_core.modeling`, every public module-level function of
the modules below and of `samhq_core.training`, and the training modules' public classes.
The modeling modules' internal building blocks are not."""

import importlib
import inspect
import pkgutil
from typing import Callable, Dict, Iterable, Iterator, List

import samhq_core.training
from samhq_core import SamHQConfig, SamHQModel, SamHQProcessor, SamHQVisionConfig
from samhq_core.modeling import ImageEncoderViT, MaskDecoderHQ, PromptEncoder, TinyViT, TwoWayTransformer
from samhq_core.processor import ProcessorOutput

CLASSES = [SamHQModel, SamHQProcessor, ProcessorOutput, SamHQConfig, SamHQVisionConfig,
           ImageEncoderViT, MaskDecoderHQ, PromptEncoder, TinyViT, TwoWayTransformer]
FUNCTION_MODULES = ["samhq_core.config", "samhq_core.processor", "samhq_core.checkpoint", "samhq_core.weights_file",
                    "samhq_core.checkpoint_sources", "samhq_core.random_weights", "samhq_core.modeling.sam_hq"]
TRAINING_MODULES = [f"samhq_core.training.{m.name}" for m in pkgutil.iter_modules(samhq_core.training.__path__)]


def _public(name: str) -> bool:
    return not name.startswith("_") or name == "__call__"


def methods(cls: type) -> Iterator[Callable]:
    """The public methods and property getters of `cls`, with those it inherits from
    samhq_core classes (not torch's or the standard library's)."""
    for klass in cls.__mro__:
        if not klass.__module__.startswith("samhq_core"):
            continue
        for name, attr in vars(klass).items():
            if isinstance(attr, (classmethod, staticmethod)):
                attr = attr.__func__
            elif isinstance(attr, property):
                attr = attr.fget
            if _public(name) and inspect.isfunction(attr):
                yield attr


def scoped() -> Iterator[Callable]:
    classes = list(CLASSES)
    for name in FUNCTION_MODULES + TRAINING_MODULES:
        module = importlib.import_module(name)
        for attr_name, attr in vars(module).items():
            if not _public(attr_name) or getattr(attr, "__module__", None) != name:
                continue  # private, or imported from elsewhere
            if inspect.isfunction(attr):
                yield attr
            elif inspect.isclass(attr) and name in TRAINING_MODULES:
                classes.append(attr)
    for cls in classes:
        yield from methods(cls)


def offenders(functions: Iterable[Callable]) -> List[str]:
    """module:qualname (and the missing sections) of each function whose docstring lacks
    "Arguments:" although it takes arguments, or "Returns:" although it returns something."""
    found: Dict[str, None] = {}  # ordered and without duplicates
    for func in functions:
        signature, doc = inspect.signature(func), inspect.getdoc(func) or ""
        missing = []
        if any(name not in ("self", "cls") for name in signature.parameters) and "Arguments:" not in doc:
            missing.append("Arguments:")
        if signature.return_annotation not in (None, "None") and "Returns:" not in doc:
            missing.append("Returns:")
        if missing:
            found[f"{func.__module__}:{func.__qualname__} (no {', '.join(missing)})"] = None
    return list(found)


def test_public_api_has_arguments_and_returns_sections():
    bad = offenders(scoped())
    assert not bad, "docstrings without the sections their signatures call for:\n" + "\n".join(bad)


def test_checker_finds_an_offender():
    def undocumented(x: int) -> int:
        """Twice x."""
        return 2 * x

    def documented(x: int) -> None:
        """Prints x.

        Arguments:
          x (int): the number.
        """

    assert offenders([undocumented, documented]) == [
        f"{__name__}:{undocumented.__qualname__} (no Arguments:, Returns:)"
    ]
