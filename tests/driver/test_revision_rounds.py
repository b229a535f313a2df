"""Sequential revisions and GLoRe refinement over the driver: one driver call per round
for the whole batch, every round conditioned on the previous attempts (checked against
direct driver calls on the same prompts), compute per round, and prompt-length limits."""

import dataclasses

import jax
import pytest

from reasonjax import parallel
from reasonjax.data.refinement import RefineFormat, global_prompt, local_prompt
from reasonjax.data.revisions import RevisionFormat, revision_prompt
from reasonjax.data.task import get_task
from reasonjax.driver import Env, run
from reasonjax.driver import records
from reasonjax.driver import revisions as rev
from reasonjax.driver.refinement import refine
from reasonjax.errors import ConfigError
from reasonjax.models.config import get_config
from reasonjax.models.tokenizer import CharTokenizer
from reasonjax.search.sampler import SampleConfig, SamplingConfig

GREEDY = SampleConfig(n=1, max_new_tokens=12, sampling=SamplingConfig(temperature=0.0))


@pytest.fixture(scope="module")
def setup():
    tok = CharTokenizer()
    mc = get_config("tiny-100k", vocab_size=tok.vocab_size, n_layers=1, max_seq_len=128)
    params = parallel.init_params(mc, jax.random.key(0), None)
    task = get_task("arithmetic")
    problems = [task.from_instance(e) for e in ("2+3*4", "9-1", "4*5+6")]
    return Env(task, tok, mc), params, problems


def test_each_round_is_one_call_conditioned_on_the_previous_attempts(setup, monkeypatch):
    env, params, problems = setup
    calls = []
    real = records.run_batches

    def counted(*args, **kwargs):
        calls.append(kwargs["texts"])
        return real(*args, **kwargs)

    monkeypatch.setattr(records, "run_batches", counted)
    fmt = RevisionFormat(window=1)
    cfg = rev.RevisionConfig(rounds=3, format=fmt, sample=GREEDY, bucket=8)
    chains = rev.sequential_revisions(env, params, problems, cfg, jax.random.key(1),
                                      batch_size=4)
    assert len(calls) == 3 and [len(t) for t in calls] == [3, 3, 3]
    plain = run(env, params, problems, GREEDY, jax.random.key(2), batch_size=4)
    for p, c, first in zip(problems, chains, plain):
        assert len(c.completions) == len(c.answers) == len(c.correct) == 3
        assert c.completions[0] == first.completion        # round 0: the plain prompt
        assert all(t > 0 for t in c.tokens_generated)
    # round 2 sees only round 1's attempt (window 1), and greedy decoding reproduces it
    assert calls[2] == [revision_prompt(env.task, p, [c.completions[1]], fmt)
                        for p, c in zip(problems, chains)]
    again = rev.run_texts(env, params, problems, calls[2], GREEDY, jax.random.key(3),
                          batch_size=4, bucket=8)
    assert [r.completion for r in again] == [c.completions[2] for c in chains]
    # a round's tokens are its share of the batch: 4 rows (one filler) ran
    assert sum(c.tokens_generated[2] for c in chains) == pytest.approx(
        sum(r.compute["tokens_generated"] for r in again))


def test_chain_answers_last_and_vote():
    c = rev.Chain(index=0, completions=("a", "b", "c"), answers=("1", "2", "1"),
                  correct=(True, False, True), tokens_generated=(1.0, 1.0, 1.0),
                  tokens_prefilled=(1.0, 1.0, 1.0))
    assert c.last() is True and c.last(2) is False
    assert c.voted() is True and c.voted(2) is False        # tie 1 vs 2: the latest
    assert rev.Chain.from_json(c.to_json()) == c


def test_config_and_prompt_length_are_checked(setup):
    env, params, problems = setup
    with pytest.raises(ConfigError, match="sample.n=2"):
        rev.RevisionConfig(sample=SampleConfig(n=2))
    with pytest.raises(ConfigError, match="rounds"):
        rev.RevisionConfig(rounds=0)
    long = SampleConfig(n=1, max_new_tokens=120)
    with pytest.raises(ConfigError, match="max_new_tokens.*max_seq_len=128"):
        rev.run_texts(env, params, problems, ["2+3*4\n" + "x" * 20] * 3, long,
                      jax.random.key(0), batch_size=4)


def test_refine_global_and_local(setup):
    env, params, problems = setup
    fmt = RefineFormat()
    drafts = ["2+12\nanswer: 15", "9-1\nanswer: 8", "20+6\nanswer: 25"]
    out = refine(env, params, problems, drafts, "global", GREEDY, jax.random.key(0),
                 batch_size=4, fmt=fmt)
    direct = rev.run_texts(env, params, problems,
                           [global_prompt(env.task, p, d, fmt)
                            for p, d in zip(problems, drafts)],
                           GREEDY, jax.random.key(0), batch_size=4)
    assert [r.solution for r in out] == [r.completion for r in direct]
    assert all(r.refined and r.tokens_generated > 0 for r in out)
    local = refine(env, params, problems, drafts, "local", GREEDY, jax.random.key(0),
                   batch_size=4, fmt=fmt, first_errors=[1, None, 0])
    assert local[1] == dataclasses.replace(local[1], solution=drafts[1], refined=False,
                                           correct=True, tokens_generated=0.0)
    steps = env.task.split_steps(drafts[0])
    texts = [local_prompt(env.task, problems[0], steps, 1, fmt),
             local_prompt(env.task, problems[2], env.task.split_steps(drafts[2]), 0, fmt)]
    direct = rev.run_texts(env, params, [problems[0], problems[2]], texts, GREEDY,
                           jax.random.key(0), batch_size=4)
    assert local[0].solution == "2+12\n" + direct[0].completion
    assert local[2].solution == direct[1].completion
    with pytest.raises(ValueError, match="first_errors"):
        refine(env, params, problems, drafts, "local", GREEDY, jax.random.key(0),
               batch_size=4)
