"""Generation settings of `mega2bart summarize` and `mega2bart eval`: `GenerationOptions`.

Each field is declared once, as a `setting()` (`mega2bart.config_types`): the CLI takes its help,
flag and lower bound from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mega2bart.config_types import setting


@dataclass
class GenerationOptions:
    """Generation settings; None keeps the model's `generation_config.json` value.

    Each field is the one declaration of its setting: `mega2bart eval` and `mega2bart summarize`
    take their generation options from these fields (help, flag; `mega2bart.cli_options`), and `min` is the
    range `__post_init__` checks.
    """

    num_beams: int | None = setting(None, help="Beams (default: the model's generation_config.json).", flag=True, min=1)
    max_new_tokens: int | None = setting(
        None, help="Longest summary in new tokens (default: the model's).", flag=True, min=1
    )
    min_new_tokens: int | None = setting(
        None, help="Shortest summary in new tokens (default: the model's).", flag=True, min=0
    )
    no_repeat_ngram_size: int | None = setting(
        None, help="Never repeat an n-gram of this size (default: the model's).", flag=True, min=0
    )
    length_penalty: float | None = setting(
        None, help="Beam length penalty; > 1 favours longer summaries (default: the model's).", flag=True
    )

    def __post_init__(self) -> None:
        for option in dataclasses.fields(self):
            value, low = getattr(self, option.name), option.metadata.get("min")
            if value is not None and low is not None and value < low:
                raise ValueError(f"`{option.name}` ({value}) must be >= {low}")
        from mega2bart.builder.generation import generation_problems

        problems = generation_problems({"length_penalty": self.length_penalty})
        if problems:
            raise ValueError(problems[0])
        if self.min_new_tokens and self.max_new_tokens and self.min_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"`min_new_tokens` ({self.min_new_tokens}) exceeds `max_new_tokens` ({self.max_new_tokens})"
            )

    def to_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


__all__ = ["GenerationOptions"]
