"""Sequential revisions and GLoRe refinement over the driver: one driver call per round
for the whole batch, every round conditioned on the previous attempts (checked against
direct driver calls on the same prompts), compute per round, and prompt-length limits."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax import parallel
from reasonjax.data.refinement import RefineFormat, global_prompt, local_prompt
from reasonjax.data.revisions import RevisionFormat, revision_prompt
from reasonjax.data.task import get_task
from reasonjax.driver import Env, run
from reasonjax.driver import records
from reasonjax.driver import revisions as rev
from reasonjax.driver.refinement import RefineConfig, refine, refine_search
from reasonjax.driver.values import step_values
from reasonjax.models.transformer import Transformer
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
                                           correct=True, record=None)
    assert local[1].tokens_generated == 0.0 and local[0].tokens_generated > 0
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


def _with_value_head(params, seed):
    vh = params["value_head"]
    kernel = 0.1 * jax.random.normal(jax.random.key(seed), vh["kernel"].shape)
    return {**params, "value_head": {**vh, "kernel": kernel}}


def test_step_values_read_the_value_head_at_each_step_end(setup):
    """Against an independent full forward: sigmoid(value head) at the last token of each
    step (the delimiter, or EOS after the answer step)."""
    env, params, problems = setup
    params = _with_value_head(params, 7)
    texts = ["2+12\nanswer: 14", "9-1\n", ""]
    scores, tokens = step_values(env, params, problems, texts, "sigmoid", batch_size=2)
    assert [len(s) for s in scores] == [2, 1, 0]
    tok = env.tokenizer
    read = 0
    for p, text, got in zip(problems[:2], texts, scores):
        steps = env.task.split_steps(text)
        ids = [tok.bos_id] + tok.encode(env.task.prompt(p))
        ends = []
        for i, step in enumerate(steps):
            final = i == len(steps) - 1 and env.task.is_final_step(step)
            ids += tok.encode(step) + ([tok.eos_id] if final else tok.encode("\n"))
            ends.append(len(ids) - 1)
        out = Transformer(env.model_config).apply({"params": params},
                                                  jnp.asarray([ids], jnp.int32))
        np.testing.assert_allclose(got, jax.nn.sigmoid(out.values[0, np.asarray(ends)]),
                                   atol=1e-5)
        read += len(ids)
    assert tokens == read


def test_refine_search_drafts_refines_and_reranks(setup):
    """--method refine's procedure against its parts: the greedy draft, the refiner's
    global / local refinements (local from the first step the scorer puts below the
    threshold) and, in mode both, the candidate with the best last-step score."""
    env, params, problems = setup
    policy = _with_value_head(params, 7)
    refiner = parallel.init_params(env.model_config, jax.random.key(9), None)
    drafts = [r.completion or "" for r in run(env, policy, problems, GREEDY,
                                              jax.random.key(5), batch_size=4)]
    draft_scores, _ = step_values(env, policy, problems, drafts, "sigmoid", batch_size=4)
    threshold = float(np.median([s[0] for s in draft_scores]))  # flags some drafts only
    marks = [next((i for i, s in enumerate(ss) if s < threshold), None)
             for ss in draft_scores]
    assert 0 < sum(m is not None for m in marks) < len(marks)
    cfg = RefineConfig(mode="both", max_new_tokens=12, threshold=threshold)
    out = refine_search(env, policy, refiner, problems, cfg, jax.random.key(0), batch_size=4)
    glob = refine(env, refiner, problems, drafts, "global", GREEDY, jax.random.key(1),
                  batch_size=4)
    loc = refine(env, refiner, problems, drafts, "local", GREEDY, jax.random.key(2),
                 batch_size=4, first_errors=marks)
    for i, rec in enumerate(out):
        texts = [c.completion for c in rec.candidates]
        assert texts == [drafts[i], glob[i].solution, loc[i].solution]
        last, _ = step_values(env, policy, [problems[i]] * 3, texts, "sigmoid", batch_size=4)
        expect = [float(s[-1]) if len(s) else 0.0 for s in last]
        np.testing.assert_allclose([c.score for c in rec.candidates], expect, atol=1e-5)
        assert rec.completion == texts[int(np.argmax(expect))]
    # compute: the draft's, the refinements' and the scorer's tokens, in total
    spent = sum(g.tokens_generated + x.tokens_generated for g, x in zip(glob, loc))
    plain = run(env, policy, problems, GREEDY, jax.random.key(5), batch_size=4)
    assert sum(r.compute["tokens_generated"] for r in out) == pytest.approx(
        spent + sum(r.compute["tokens_generated"] for r in plain), rel=1e-5)
    # scored: the drafts and every rewrite; a local refinement that kept its draft (no
    # step flagged) is not read again
    rewritten = [i for i, x in enumerate(loc) if x.refined]
    assert 0 < len(rewritten) < len(loc)
    read = sum(step_values(env, policy, probs, texts, "sigmoid", 4)[1] for probs, texts in
               ((problems, drafts), (problems, [g.solution for g in glob]),
                ([problems[i] for i in rewritten], [loc[i].solution for i in rewritten])))
    assert sum(r.compute["tokens_scored"] for r in out) == pytest.approx(read, rel=1e-5)
    only_global = refine_search(env, policy, refiner, problems,
                                dataclasses.replace(cfg, mode="global"), jax.random.key(0),
                                batch_size=4)
    assert [r.completion for r in only_global] == [g.solution for g in glob]
    assert all(r.compute["tokens_scored"] == 0 for r in only_global)
    # forward passes: the draft's batch, one scoring pass per solution set, each
    # refinement's batch (global and local counted apart)
    passes = [r.compute["batch_forward_passes"] for r in out]
    parts = (plain[0].compute["batch_forward_passes"] + 3
             + glob[0].record.compute["batch_forward_passes"]
             + next(x.record for x in loc if x.record).compute["batch_forward_passes"])
    assert sum(passes) == pytest.approx(parts, rel=1e-5)
    with pytest.raises(ConfigError, match="mode"):
        RefineConfig(mode="rerank")
    with pytest.raises(ConfigError, match="transform"):
        RefineConfig(transform="softplus")
