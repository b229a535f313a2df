"""Sequential revisions over the driver (Snell et al., 2024, Sec. 6): each round is one
driver call for the whole batch of problems, every prompt holding that problem's
previous attempts (:func:`reasonjax.data.revisions.revision_prompt`).

:func:`sequential_revisions` returns one :class:`Chain` per problem: every round's
completion, answer and verdict, and the tokens the round spent on it (its share of the
batch's generated and prefilled tokens, as in :mod:`reasonjax.driver.records`). The
answer of a chain of R rounds is its last attempt's, or a vote over its attempts
(:func:`reasonjax.data.revisions.chain_vote`); a chain's first k rounds are the chain of
a k-round run, so one run answers every budget up to R.

:func:`run_texts` is the driver on prompt texts of any length: the prompt length of a
call is its longest prompt rounded up to ``bucket`` tokens (few shapes, few compiles),
and a prompt that would leave no room for ``max_new_tokens`` is an error, never cut.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax

from reasonjax.config import check_fields
from reasonjax.data.revisions import RevisionFormat, chain_vote, revision_prompt
from reasonjax.data.task import Problem
from reasonjax.driver.batches import Scorer
from reasonjax.driver.env import Env
from reasonjax.driver.prompts import encode_prompts
from reasonjax.driver.records import Record, run
from reasonjax.errors import ConfigError
from reasonjax.search.sampler import SampleConfig


@dataclasses.dataclass(frozen=True)
class RevisionConfig:
    """``rounds`` attempts per problem in sequence, each one sample drawn with
    ``sample`` (``n`` must be 1: parallel chains are more problems' rows) from the
    revision prompt of ``format``. ``bucket``: prompt lengths round up to a multiple."""

    rounds: int = 4
    format: RevisionFormat = RevisionFormat()
    sample: SampleConfig = SampleConfig(n=1, max_new_tokens=64)
    bucket: int = 32

    def __post_init__(self):
        check_fields(self, rounds=">= 1", bucket=">= 1")
        if self.sample.n != 1:
            raise ConfigError(f"sample.n={self.sample.n}: a revision chain draws one "
                              "attempt per round; set sample.n=1")


@dataclasses.dataclass(frozen=True)
class Chain:
    """One problem's revision chain, one entry per round: ``completions``, ``answers``
    (None: none), ``correct`` (None: the task cannot judge), ``tokens_generated`` and
    ``tokens_prefilled`` (the round's share of its batch)."""

    index: int
    completions: tuple[str, ...]
    answers: tuple[Optional[str], ...]
    correct: tuple[Optional[bool], ...]
    tokens_generated: tuple[float, ...]
    tokens_prefilled: tuple[float, ...]

    def last(self, rounds: Optional[int] = None) -> Optional[bool]:
        """Whether the last of the first ``rounds`` attempts (default: all) is right."""
        return self.correct[(rounds or len(self.correct)) - 1]

    def voted(self, rounds: Optional[int] = None) -> Optional[bool]:
        """Whether a majority vote over the first ``rounds`` attempts is right (no answer
        at all: False)."""
        k = rounds or len(self.correct)
        pick = chain_vote(self.answers[:k])
        return False if pick is None else self.correct[pick]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Chain":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def run_texts(env: Env, params, problems: Sequence[Problem], texts: Sequence[str],
              method: SampleConfig, rng: jax.Array, *, batch_size: int, bucket: int = 32,
              scorer: Optional[Scorer] = None) -> list[Record]:
    """:func:`reasonjax.driver.run` with ``texts`` as the problems' prompts: judged
    records in order (see the module docstring for the prompt length)."""
    longest = encode_prompts(dataclasses.replace(env, prompt_len=None), problems,
                             texts).tokens.shape[1]
    length = max(-(-longest // bucket) * bucket, env.prompt_len or 0)
    limit = env.model_config.max_seq_len - method.max_new_tokens
    if longest > limit:
        raise ConfigError(f"max_new_tokens: a prompt has {longest} tokens, and "
                          f"{longest} + max_new_tokens={method.max_new_tokens} exceeds the "
                          f"model's max_seq_len={env.model_config.max_seq_len}; show fewer "
                          "attempts (window) or generate fewer tokens")
    env = dataclasses.replace(env, prompt_len=min(length, limit))
    return run(env, params, problems, method, rng, batch_size=batch_size, scorer=scorer,
               texts=texts)


def sequential_revisions(env: Env, params, problems: Sequence[Problem], cfg: RevisionConfig,
                         rng: jax.Array, *, batch_size: int) -> list[Chain]:
    """``cfg.rounds`` rounds of revision over ``problems`` (one driver call per round
    for all of them; round r draws with ``fold_in(rng, r)``): one :class:`Chain` each."""
    attempts: list[list[str]] = [[] for _ in problems]
    rounds: list[list[Record]] = []
    for r in range(cfg.rounds):
        texts = [revision_prompt(env.task, p, a, cfg.format)
                 for p, a in zip(problems, attempts)]
        records = run_texts(env, params, problems, texts, cfg.sample,
                            jax.random.fold_in(rng, r), batch_size=batch_size,
                            bucket=cfg.bucket)
        for a, rec in zip(attempts, records):
            a.append(rec.completion)
        rounds.append(records)
    return [Chain(index=i, completions=tuple(attempts[i]),
                  answers=tuple(rs[i].answer for rs in rounds),
                  correct=tuple(rs[i].correct for rs in rounds),
                  tokens_generated=tuple(rs[i].compute["tokens_generated"] for rs in rounds),
                  tokens_prefilled=tuple(rs[i].compute["tokens_prefilled"] for rs in rounds))
            for i in range(len(problems))]
