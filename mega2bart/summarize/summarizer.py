"""`Summarizer`: length-batched generation, windows beyond the context and the summary of summaries
(the steps are in the package docstring); `progress_bar`, the progress bar of every summarising loop."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from mega2bart.documents import page_at
from mega2bart.tokenization import special_tokens_around

from .loading import load_for_inference
from .options import GenerationOptions
from .windows import SummaryResult, Window, window_spans

logger = logging.getLogger("mega2bart.summarize")  # the package's logger: the name its messages have always had
MAX_CONTEXT = 10**7
"""The longest context a summarizer takes, in tokens (`max_input_tokens`, or the tokenizer's model_max_length)."""


class Summarizer:
    """Summarise texts of any length with an encoder-decoder model (see the module docstring).

    Args:
        model / tokenizer: a mega2bart model (or any seq2seq model) and its tokenizer.
        max_input_tokens: the context, special tokens included; default `tokenizer.model_max_length`.
        window_overlap: tokens shared by neighbouring windows; default min(256, window // 8).
        batch_size: generation inputs per `generate` call (windows of similar length together).
        generation: overrides of the model's generation config.
        merge: "summarize" (a summary of the window summaries) or "concatenate".
        max_levels: most merge levels above the windows before the joined summaries are truncated.
        overflow: "windows" (default) or "truncate" (cut to the context, like training does).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_input_tokens: int | None = None,
        window_overlap: int | None = None,
        batch_size: int = 4,
        generation: GenerationOptions | None = None,
        merge: Literal["summarize", "concatenate"] = "summarize",
        max_levels: int = 3,
        overflow: Literal["windows", "truncate"] = "windows",
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        specials = special_tokens_around(tokenizer)  # `<s> ... </s>` for BART, added around every window
        self.lead_ids, self.trail_ids = list(specials.lead), list(specials.trail)
        self.num_specials = len(self.lead_ids) + len(self.trail_ids)
        if max_input_tokens is not None and not 0 < max_input_tokens <= MAX_CONTEXT:
            raise ValueError(f"max_input_tokens ({max_input_tokens}) must be in [1, {MAX_CONTEXT:,}] tokens")
        context = max_input_tokens or tokenizer.model_max_length
        if not isinstance(context, int) or context > MAX_CONTEXT:
            raise ValueError(
                f"the tokenizer has no usable model_max_length ({context}): pass max_input_tokens explicitly"
            )
        if context <= self.num_specials + 1:
            raise ValueError(f"max_input_tokens ({context}) must exceed the {self.num_specials} special tokens")
        self.window = context - self.num_specials  # text tokens per window
        if window_overlap is None:
            window_overlap = min(256, self.window // 8)
        if not 0 <= window_overlap < self.window:
            raise ValueError(
                f"window_overlap ({window_overlap}) must be >= 0 and below the window of {self.window} text tokens "
                f"(max_input_tokens {context} minus {self.num_specials} special tokens)"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size ({batch_size}) must be >= 1")
        if merge not in ("summarize", "concatenate"):
            raise ValueError(f"merge ({merge!r}) must be 'summarize' or 'concatenate'")
        if overflow not in ("windows", "truncate"):
            raise ValueError(f"overflow ({overflow!r}) must be 'windows' or 'truncate'")
        if max_levels < 1:
            raise ValueError(f"max_levels ({max_levels}) must be >= 1")
        self.max_input_tokens = context
        self.window_overlap = window_overlap
        self.batch_size = batch_size
        self.generation = generation or GenerationOptions()
        from mega2bart.builder.generation import new_token_limits

        model_min = new_token_limits(model.generation_config)[1]
        if (
            self.generation.max_new_tokens
            and self.generation.min_new_tokens is None
            and model_min
            and model_min > self.generation.max_new_tokens
        ):
            logger.info(
                "min_new_tokens %d of the model's generation config lowered to max_new_tokens %d",
                model_min,
                self.generation.max_new_tokens,
            )
            self.generation = dataclasses.replace(self.generation, min_new_tokens=self.generation.max_new_tokens)
        self.merge = merge
        self.max_levels = max_levels
        self.overflow = overflow

    @classmethod
    def load(cls, model_dir: str | os.PathLike, dtype: str = "fp32", **options: Any) -> Summarizer:
        """A Summarizer of the saved model in `model_dir`, loaded for inference in `dtype`
        (`load_for_inference`); `options` are the constructor's keyword arguments."""
        model, tokenizer = load_for_inference(model_dir, dtype)
        return cls(model, tokenizer, **options)

    # ------------------------------------------------------------------ generation

    def generate_lengths(self) -> dict[str, int]:
        """The options' new-token limits as `max_length`/`min_length`: the form the model's own defaults are
        saved in (`mega2bart.builder.generation`), so they replace them without transformers' precedence warning."""
        from mega2bart.builder.generation import generation_lengths

        return generation_lengths(self.generation.max_new_tokens, self.generation.min_new_tokens)

    def generate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments `generate` gets: the options set, lengths as `generate_lengths`."""
        new_tokens = ("max_new_tokens", "min_new_tokens")
        kwargs = {key: value for key, value in self.generation.to_kwargs().items() if key not in new_tokens}
        return {**kwargs, **self.generate_lengths()}

    def generate(self, token_lists: Sequence[list[int]], progress: Any | None = None) -> list[str]:
        """Summarise token lists (text tokens, specials added here), batched by length.

        A batch is right-padded to its longest input only: a MEGA encoder pads to a multiple of its
        chunk_size itself and slices its outputs back."""
        order = sorted(range(len(token_lists)), key=lambda i: -len(token_lists[i]))
        out: list[str] = [""] * len(token_lists)
        device = next(self.model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            batch_ids = order[start : start + self.batch_size]
            features = [{"input_ids": [*self.lead_ids, *token_lists[i], *self.trail_ids]} for i in batch_ids]
            batch = self.tokenizer.pad(features, padding=True, return_tensors="pt")
            with torch.inference_mode():
                generated = self.model.generate(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    **self.generate_kwargs(),
                )
            texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
            for i, text in zip(batch_ids, texts, strict=True):
                out[i] = text.strip()
            if progress is not None:
                progress.update(len(batch_ids))
        return out

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]

    def _encode_pages(self, text: str, page_starts: Sequence[int]) -> tuple[list[int], list[int]]:
        """The tokens of `text` and the page (1-based) of each, from the char offsets where pages start
        (`mega2bart.documents.Document.page_starts`); no pages: ([tokens], [])."""
        if not page_starts:
            return self._encode(text), []
        if getattr(self.tokenizer, "is_fast", False):
            encoded = self.tokenizer(text, add_special_tokens=False, truncation=False, return_offsets_mapping=True)
            return encoded["input_ids"], [page_at(page_starts, start) for start, _ in encoded["offset_mapping"]]
        tokens = self._encode(text)  # a tokenizer without offsets: each page's first token from its prefix
        firsts = [len(self._encode(text[:start])) for start in page_starts]
        return tokens, [page_at(firsts, k) for k in range(len(tokens))]

    def summarize(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None = None,
        progress: bool = False,
        page_starts: Sequence[Sequence[int]] | None = None,
    ) -> list[SummaryResult]:
        """Summarise `texts` (any length); windows of all texts are generated together, by length.

        Level by level: every document still in progress is cut into windows (`_level_inputs`),
        all windows are generated in one `generate` call, and each document either has its summary
        or goes on with its window summaries joined as the next level's input (`_close_level`).
        `page_starts`: per text, the char offsets where its pages start (empty: no pages), so that each
        window records its pages (`Window.pages`).
        """
        ids = list(ids) if ids is not None else [str(i) for i in range(len(texts))]
        if len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} ids for {len(texts)} texts")
        page_starts = list(page_starts) if page_starts is not None else [()] * len(texts)
        if len(page_starts) != len(texts):
            raise ValueError(f"got {len(page_starts)} page_starts for {len(texts)} texts")
        states = []
        for doc_id, text, starts in zip(ids, texts, page_starts, strict=True):
            tokens, token_pages = self._encode_pages(text, starts)
            result = SummaryResult(id=doc_id, summary="", num_tokens=len(tokens), levels=0)
            states.append(_DocumentState(result, tokens, token_pages))
        active = states
        level = 0
        bar = progress_bar(progress, desc="windows")
        while active:
            inputs = [item for state in active for item in self._level_inputs(state, level)]
            if bar is not None:
                bar.total = (bar.total or 0) + len(inputs)
                bar.refresh()
            summaries = self.generate([item.tokens for item in inputs], progress=bar)
            windows: dict[_DocumentState, list[Window]] = {state: [] for state in active}  # in document order
            for item, summary in zip(inputs, summaries, strict=True):
                item.window.summary = summary
                windows[item.state].append(item.window)
            active = [state for state in active if self._close_level(state, windows[state], level)]
            level += 1
        if bar is not None:
            bar.close()
        return [state.result for state in states]

    def _level_inputs(self, state: _DocumentState, level: int) -> list[_WindowInput]:
        """The windows of `state`'s input at `level`: overlapping spans, or the first `window` tokens
        when it must be truncated (`overflow="truncate"`, or the last merge level is still too long)."""
        tokens = state.tokens
        if len(tokens) > self.window and (self.overflow == "truncate" or level >= self.max_levels):
            if level > 0:
                logger.warning(
                    "%s: the joined window summaries (%d tokens) still exceed the context after %d merge "
                    "levels: truncated to %d tokens",
                    state.result.id,
                    len(tokens),
                    level,
                    self.window,
                )
            state.result.truncated = True
            spans = [(0, self.window)]
        else:
            spans = window_spans(len(tokens), self.window, self.window_overlap)
        inputs = []
        for index, (start, end) in enumerate(spans):
            window = Window(level, index, start, end, sources=state.sources(start, end))
            window.pages = state.pages(window)
            inputs.append(_WindowInput(state, window, tokens[start:end]))
        return inputs

    def _close_level(self, state: _DocumentState, windows: list[Window], level: int) -> bool:
        """Record `state`'s summarised windows of `level`; True if their summaries need another level."""
        result = state.result
        result.windows.extend(windows)
        result.levels = level + 1
        if len(windows) == 1:
            result.summary = windows[0].summary
            return False
        if self.merge == "concatenate":
            result.summary = "\n".join(w.summary for w in windows)
            return False
        state.tokens, state.part_spans = self._join([w.summary for w in windows])
        state.part_pages = [w.pages for w in windows]
        return True

    def _join(self, summaries: list[str]) -> tuple[list[int], list[tuple[int, int]]]:
        """The tokens of `summaries` joined by newlines, and each summary's [start, end) span in them
        (joined from the parts' own tokens, so every span is exact)."""
        separator = self._encode("\n")
        joined: list[int] = []
        spans: list[tuple[int, int]] = []
        for k, summary in enumerate(summaries):
            joined.extend(separator if k else [])
            part = self._encode(summary)
            spans.append((len(joined), len(joined) + len(part)))
            joined.extend(part)
        return joined, spans


@dataclass(eq=False)  # hashed by identity: a key of the per-level window lists
class _DocumentState:
    """One document's progress through the levels of `Summarizer.summarize`."""

    result: SummaryResult
    """Filled in level by level: windows, levels, and finally the summary."""
    tokens: list[int]
    """The input of the current level: the document's tokens, then its joined window summaries."""
    token_pages: list[int] = field(default_factory=list)
    """The page (1-based) of each of the document's tokens; empty for a document without pages."""
    part_spans: list[tuple[int, int]] = field(default_factory=list)
    """The [start, end) span in `tokens` of each previous-level window summary (empty at level 0)."""
    part_pages: list[list[int]] = field(default_factory=list)
    """The `Window.pages` of each previous-level window (empty at level 0)."""

    def sources(self, start: int, end: int) -> list[int]:
        """Indices of the previous-level windows whose summaries overlap the span [start, end)."""
        return [k for k, (a, b) in enumerate(self.part_spans) if a < end and b > start]

    def pages(self, window: Window) -> list[int]:
        """`window`'s [first, last] page: of its first and last token at level 0, of its sources above."""
        if not self.token_pages:
            return []
        if window.level == 0:
            if window.token_end <= window.token_start:  # an empty document's one window
                return []
            return [self.token_pages[window.token_start], self.token_pages[window.token_end - 1]]
        ranges = [self.part_pages[k] for k in window.sources if self.part_pages[k]]
        return [min(r[0] for r in ranges), max(r[1] for r in ranges)] if ranges else []


@dataclass
class _WindowInput:
    """One generation input: a window of a document's current level and its tokens."""

    state: _DocumentState
    window: Window
    tokens: list[int]


def progress_bar(enabled: bool, desc: str, total: int | None = None, unit: str = "it") -> Any | None:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


__all__ = ["Summarizer", "progress_bar"]
