"""A config's problems, all of them at once."""

from typing import List


class ConfigError(ValueError):
    """A config with one or more problems; `problems` lists them all."""

    def __init__(self, problems: List[str]) -> None:
        self.problems = problems
        super().__init__("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))
