"""In-context language learning: strings of a random regular language, learned from the prompt.

Token ids of the ``icll`` family: symbols ``0 .. n_symbols - 1``, then the string delimiter
``n_symbols`` and the padding token ``n_symbols + 1`` (the vocabulary has ``n_symbols + 2``).
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import Tensor

from iclab.episode import Episode
from iclab.tasks.base import Task, TaskOptions, register_task

START_STATE = 0
SYMBOL_SLOT = -1  # a layout position the random walk fills with a symbol
NO_EDGE = -1  # a transition table entry for a symbol that leaves no edge
PAST_END = -1  # the automaton state recorded at padding positions


class InContextLanguageOptions(TaskOptions):
    n_symbols: int = Field(18, ge=2, description="symbols of the whole family (letters)")
    min_states: int = Field(4, ge=2, description="fewest automaton states")
    max_states: int = Field(12, ge=2, description="most automaton states")
    min_alphabet: int = Field(
        4, ge=1, description="fewest symbols one automaton uses (a random subset of n_symbols)"
    )
    max_out_degree: int = Field(
        3, ge=1, description="most edges leaving a state (uniform on 1..max_out_degree)"
    )
    min_strings: int = Field(10, ge=1, description="fewest strings per prompt")
    max_strings: int = Field(19, ge=1, description="most strings per prompt")
    max_string_length: int = Field(
        49, ge=1, description="longest string (lengths uniform on 1..max_string_length)"
    )

    @model_validator(mode="after")
    def _ranges_are_consistent(self) -> InContextLanguageOptions:
        for low, high in (("min_states", "max_states"), ("min_strings", "max_strings")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"{low} ({getattr(self, low)}) must not exceed {high} ({getattr(self, high)})"
                )
        if self.min_alphabet > self.n_symbols:
            raise ValueError(
                f"min_alphabet ({self.min_alphabet}) must not exceed n_symbols ({self.n_symbols})"
            )
        # Edges of a state carry distinct symbols and go to distinct other states.
        if self.max_out_degree > min(self.min_states - 1, self.min_alphabet):
            raise ValueError(
                f"max_out_degree ({self.max_out_degree}) must be at most min_states - 1 "
                f"({self.min_states - 1}) and min_alphabet ({self.min_alphabet}): a state's "
                "edges need distinct symbols and distinct target states"
            )
        return self


@register_task("icll")
class InContextLanguage(Task):
    """Strings from a random finite automaton per prompt, separated by a delimiter (REGBENCH).

    Akyürek, Wang, Kim, Andreas 2024, *In-context language learning: architectures and
    algorithms* (arXiv 2401.12973). Every prompt has its own random deterministic automaton with
    uniform transition probabilities (the paper's probabilistic finite automata); the prompt is
    several strings it generates, joined by a delimiter, and the model predicts the next token.

    The generator follows the authors' REGBENCH code (``zoology/data/regbench.py`` in Bailin
    Wang's ``berlino/seq-test``, found with the ``search`` tool); defaults are its values:

    * states ``~ U{4..12}``; alphabet: a uniformly random subset of ``U{4..18}`` of the 18
      symbols; every state is accepting and the start state is state 0;
    * each state has ``U{1..3}`` outgoing edges (``rng.integers(1, 4)``), with distinct symbols
      from the alphabet and distinct target states other than itself (no self-loops);
    * a prompt holds ``U{10..19}`` strings of lengths ``U{1..49}``; a string is a random walk from
      the start state choosing uniformly among the edges of the current state; strings are
      joined by the delimiter, the last one is not followed by it, and the stream is truncated
      or padded to ``n_points + 1`` tokens (inputs and next-token targets).

    The code also minimises and trims each automaton, which leaves the distribution of strings
    unchanged (equivalent states of an all-accepting automaton have the same outgoing symbols),
    and draws a fixed training set of distinct automata (10,000 in its REGBENCH config); here
    automata are used as drawn and every prompt gets a fresh one.
    ``n_points`` defaults to 512, the sequence length of the authors' runs.

    Scoring follows the authors' evaluation: ``loss_mask`` keeps the positions whose next token
    is a symbol (not the delimiter, not padding), where the REGBENCH labels are defined, and a
    prediction counts when it is a valid continuation: a symbol leaving the automaton's current
    state, ``meta["valid_next"]`` (after a delimiter: a symbol leaving the start state). The
    delimiter is never a scored target nor a valid prediction: as every state accepts, it would
    be valid after every non-empty prefix, and always predicting it would score near 1.

    ``meta``: ``transitions`` (B, max_states, V) next state of each (state, token), -1 for no
    edge (delimiter and padding columns are all -1; so are the rows of unused states);
    ``n_states`` (B,); ``states`` (B, T) the state after reading ``inputs[:, : t + 1]`` (the
    start state after a delimiter, -1 at padding); ``valid_next`` (B, T, V) bool.
    """

    kind = "tokens"
    Options = InContextLanguageOptions
    paper = "Akyürek, Wang, Kim, Andreas 2024, arXiv 2401.12973"
    default_n_points = 512
    yardsticks = ("ngram(n=1)", "ngram(n=2)", "ngram(n=3)")
    options: InContextLanguageOptions

    @property
    def n_classes(self) -> int:
        return self.options.n_symbols + 2

    @property
    def delimiter(self) -> int:
        return self.options.n_symbols

    @property
    def padding(self) -> int:
        return self.options.n_symbols + 1

    def sample(
        self,
        batch_size: int,
        n_points: int,
        generator: torch.Generator,
        n_dims_active: int | None = None,
    ) -> Episode:
        transitions, n_states = self._sample_automata(batch_size, generator)
        layout = self._sample_layout(batch_size, n_points + 1, generator)
        symbols, states = _random_walks(transitions, layout == SYMBOL_SLOT, generator)
        stream = torch.where(layout == SYMBOL_SLOT, symbols, layout)
        states = torch.where(layout == self.padding, PAST_END, states)
        inputs, targets = stream[:, :-1], stream[:, 1:]
        states = states[:, :-1]
        valid_next = _valid_next(transitions, states)
        return Episode(
            inputs=inputs,
            targets=targets,
            kind="tokens",
            meta={
                "transitions": transitions,
                "n_states": n_states,
                "states": states,
                "valid_next": valid_next,
            },
            loss_mask=targets < self.options.n_symbols,
        )

    def _sample_automata(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Transition tables (B, max_states, V) and state counts (B,), all prompts at once."""
        opts, device = self.options, generator.device
        n_states = _uniform_integers(opts.min_states, opts.max_states, (batch_size,), generator)
        alphabet_size = _uniform_integers(
            opts.min_alphabet, opts.n_symbols, (batch_size,), generator
        )
        n_out = _uniform_integers(1, opts.max_out_degree, (batch_size, opts.max_states), generator)
        in_alphabet = _random_subset_mask(alphabet_size, opts.n_symbols, generator)  # (B, Σ)
        states = torch.arange(opts.max_states, device=device)
        is_state = states < n_states[:, None]  # (B, S)
        # Per state, the first n_out of a random order of the allowed symbols / target states.
        allowed_symbols = in_alphabet[:, None, :].expand(-1, opts.max_states, -1)
        edge_symbols = _random_order(allowed_symbols, generator)[..., : opts.max_out_degree]
        allowed_targets = is_state[:, None, :] & (states[:, None] != states[None, :])
        edge_targets = _random_order(allowed_targets, generator)[..., : opts.max_out_degree]
        is_edge = torch.arange(opts.max_out_degree, device=device) < n_out[..., None]
        is_edge &= is_state[..., None]
        transitions = torch.full(
            (batch_size, opts.max_states, self.n_classes), NO_EDGE, dtype=torch.long, device=device
        )
        # Edge symbols of a state are distinct, so each entry is written once.
        transitions.scatter_(-1, edge_symbols, torch.where(is_edge, edge_targets, NO_EDGE))
        return transitions, n_states

    def _sample_layout(self, batch_size: int, length: int, generator: torch.Generator) -> Tensor:
        """(B, length): ``SYMBOL_SLOT`` where the stream holds a symbol (the walk fills it in),
        else the delimiter or padding."""
        opts, device = self.options, generator.device
        n_strings = _uniform_integers(opts.min_strings, opts.max_strings, (batch_size,), generator)
        lengths = _uniform_integers(
            1, opts.max_string_length, (batch_size, opts.max_strings), generator
        )
        lengths = lengths.masked_fill(
            torch.arange(opts.max_strings, device=device) >= n_strings[:, None], 0
        )
        sizes = lengths + (lengths > 0)  # each string's symbols and the delimiter after it
        ends = sizes.cumsum(-1)  # (B, max_strings)
        position = torch.arange(length, device=device).expand(batch_size, -1).contiguous()
        current = torch.searchsorted(ends, position, right=True).clamp(max=opts.max_strings - 1)
        offset = position - (ends - sizes).gather(1, current)  # within the current string
        layout = torch.where(offset < lengths.gather(1, current), SYMBOL_SLOT, self.delimiter)
        past_end = position >= ends[:, -1:] - 1  # the last string has no delimiter after it
        return layout.masked_fill(past_end, self.padding)


def _uniform_integers(
    low: int, high: int, shape: tuple[int, ...], generator: torch.Generator
) -> Tensor:
    """Integers uniform on ``low..high`` inclusive."""
    return torch.randint(low, high + 1, shape, generator=generator, device=generator.device)


def _random_order(allowed: Tensor, generator: torch.Generator) -> Tensor:
    """Indices of the last axis in uniformly random order, allowed entries first."""
    keys = torch.rand(allowed.shape, generator=generator, device=generator.device)
    return keys.masked_fill(~allowed, 2.0).argsort(dim=-1, stable=True)


def _random_subset_mask(size: Tensor, n_items: int, generator: torch.Generator) -> Tensor:
    """(B, n_items) bool: a uniformly random subset of ``size[b]`` items per row."""
    allowed = torch.ones(len(size), n_items, dtype=torch.bool, device=size.device)
    order = _random_order(allowed, generator)
    ranks = order.argsort(dim=-1)
    return ranks < size[:, None]


def _random_walks(
    transitions: Tensor, is_symbol: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Symbols (B, P) and the state after each (B, P) of one walk per prompt.

    A walk starts at the start state, takes a uniformly random edge of the current state at
    every symbol position and returns to the start state at every other position (delimiters).
    Sequential in the positions, vectorised over prompts.
    """
    batch, length = is_symbol.shape
    n_out = (transitions >= 0).sum(-1)  # (B, S)
    # Per state, its edges' symbols first (in increasing order), then the missing ones.
    edge_symbols = (transitions < 0).to(torch.uint8).argsort(dim=-1, stable=True)
    uniforms = torch.rand(batch, length, generator=generator, device=generator.device)
    prompts = torch.arange(batch, device=transitions.device)
    state = torch.full((batch,), START_STATE, dtype=torch.long, device=transitions.device)
    symbols = torch.empty(batch, length, dtype=torch.long, device=transitions.device)
    states = torch.empty_like(symbols)
    for position in range(length):
        n_choices = n_out[prompts, state]
        choice = (uniforms[:, position] * n_choices).long().clamp(max=n_choices - 1)
        symbol = edge_symbols[prompts, state, choice]
        next_state = transitions[prompts, state, symbol]
        state = torch.where(is_symbol[:, position], next_state, START_STATE)
        symbols[:, position], states[:, position] = symbol, state
    return symbols, states


def _valid_next(transitions: Tensor, states: Tensor) -> Tensor:
    """(B, T, V) bool: the tokens with an edge out of each position's state (none at padding)."""
    rows = transitions.gather(
        1, states.clamp(min=0)[..., None].expand(-1, -1, transitions.shape[-1])
    )
    return (rows >= 0) & (states >= 0)[..., None]
