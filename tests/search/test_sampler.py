"""Sampler: cached greedy == full-forward argmax, filters, stop rules, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reasonjax.models import ModelOutput, Transformer, train_sentencepiece
from reasonjax.search.beam import BeamConfig, beam_search, dvts
from reasonjax.search.best_of_n import BestOfNConfig, best_of_n
from reasonjax.search.mcts import MCTSConfig, mcts
from reasonjax.search.particles import ParticleConfig, particle_filter
from reasonjax.config import from_dict
from reasonjax.errors import ConfigError
from reasonjax.search.sampler import (STOP_DELIMITER, STOP_EOS, STOP_LENGTH, CyclicReflex,
                                      DecodeState, SamplingConfig, SearchError, filter_logits,
                                      generate, reflect_logits, sample, sample_tokens,
                                      stop_tokens, stop_tokens_for)

from search_helpers import CFG, TOK

KEY = jax.random.key(0)


def full_forward_greedy(params, tokens, mask, n):
    """Greedy continuation by re-running the whole sequence each token (no cache); the
    sequence is right-padded to a fixed length so the forward compiles once. Returns
    (tokens [B, n], their log-probs [B, n], the logits each was picked from [B, n, V])."""
    model = Transformer(CFG)
    fwd = jax.jit(lambda p, t, m: model.apply({"params": p}, t, attention_mask=m).logits)
    B, P = tokens.shape
    toks = np.zeros((B, P + n), np.int32)
    m = np.zeros((B, P + n), np.int32)
    toks[:, :P], m[:, :P] = tokens, mask
    out_tok, out_lp, out_logits = [], [], []
    for t in range(n):
        logits = np.asarray(fwd(params, jnp.asarray(toks), jnp.asarray(m)))[:, P + t - 1]
        nxt = logits.argmax(-1)
        out_tok.append(nxt)
        out_lp.append(np.asarray(jax.nn.log_softmax(jnp.asarray(logits), -1))[np.arange(B), nxt])
        out_logits.append(logits)
        toks[:, P + t], m[:, P + t] = nxt, 1
    return np.stack(out_tok, 1), np.stack(out_lp, 1), np.stack(out_logits, 1)


NO_STOP = stop_tokens(CFG.vocab_size)


def test_greedy_with_cache_equals_full_forward_argmax(params, prompts):
    tokens, mask = prompts
    out = sample(CFG, params, tokens, mask, jax.random.key(0), max_new_tokens=12,
                 sampling=SamplingConfig(temperature=0.0), stop=NO_STOP)
    ref_tok, ref_lp, _ = full_forward_greedy(params, tokens, mask, 12)
    np.testing.assert_array_equal(out.tokens[:, 0], ref_tok)
    np.testing.assert_allclose(out.logprobs[:, 0], ref_lp, atol=1e-5)
    np.testing.assert_array_equal(out.stop_reason, STOP_LENGTH)
    # Near-zero temperature sampling picks the argmax too.
    cold = sample(CFG, params, tokens, mask, jax.random.key(1), max_new_tokens=12,
                  sampling=SamplingConfig(temperature=1e-4), stop=NO_STOP)
    np.testing.assert_array_equal(cold.tokens[:, 0], ref_tok)


def test_chunked_decoding_changes_nothing(params, prompts):
    """Decoding on a prompt-sized cache grown chunk by chunk (chunks of 20 or of 16, 16
    and 8 tokens) gives the tokens, log-probs, values, lengths and stop reasons of a cache
    allocated for the whole budget, with sampling and stops at work; and greedy chunked
    decoding still matches the cache-free reference."""
    tokens, mask = prompts
    stop = stop_tokens(CFG.vocab_size, eos_ids=TOK.encode("xyz"))
    runs = [sample(CFG, params, tokens, mask, jax.random.key(7), max_new_tokens=40, n=4,
                   stop=stop, decode_chunks=c) for c in (1, 2, 3)]
    lengths = np.asarray(runs[0].lengths)
    assert lengths.min() < 16 and lengths.max() == 40  # rows stop in every chunk or run out
    assert ((lengths > 16) & (lengths < 32)).any()
    for run in runs[1:]:
        for field in ("tokens", "lengths", "stop_reason"):
            np.testing.assert_array_equal(getattr(run, field), getattr(runs[0], field))
        for field in ("logprobs", "values"):
            np.testing.assert_allclose(getattr(run, field), getattr(runs[0], field), atol=1e-5)
        assert run.compute.to_dict() == runs[0].compute.to_dict()
    greedy = sample(CFG, params, tokens, mask, KEY, max_new_tokens=40, decode_chunks=3,
                    sampling=SamplingConfig(temperature=0.0), stop=NO_STOP)
    np.testing.assert_array_equal(greedy.tokens[:, 0],
                                  full_forward_greedy(params, tokens, mask, 40)[0])


def test_n_samples_share_one_prefill(params, prompts):
    tokens, mask = prompts
    out = sample(CFG, params, tokens, mask, jax.random.key(0), max_new_tokens=12, n=3,
                 stop=NO_STOP)
    assert out.tokens.shape == (2, 3, 12)
    c = out.compute.to_dict()
    assert c["tokens_prefilled"] == mask.sum()  # not 3x: one prefill per prompt
    assert c["tokens_generated"] == 2 * 3 * 12
    assert c["forward_passes"] == 1 + 12
    # Samples of a prompt differ (random weights: near-uniform over 100 tokens).
    assert len({tuple(r) for r in np.asarray(out.tokens[0])}) == 3


CONFIGS = [SamplingConfig(top_k=3), SamplingConfig(top_p=0.3), SamplingConfig(min_p=0.5),
           SamplingConfig(temperature=0.7, top_k=5, top_p=0.8, min_p=0.05)]


def allowed_set(logits: np.ndarray, cfg: SamplingConfig) -> np.ndarray:
    """Independent numpy reference of the filters (HF order)."""
    x = logits / cfg.temperature
    keep = np.ones_like(x, bool)
    if cfg.top_k:
        kth = np.sort(x)[::-1][min(cfg.top_k, len(x)) - 1]
        keep &= x >= kth
    if cfg.top_p < 1:
        p = np.where(keep, np.exp(x - x[keep].max()), 0)
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        mass_before = np.cumsum(p[order]) - p[order]
        kept = order[mass_before < cfg.top_p]
        keep &= p >= p[kept].min() - 1e-7
    if cfg.min_p > 0:
        p = np.where(keep, np.exp(x - x[keep].max()), 0)
        p /= p.sum()
        keep &= p >= cfg.min_p * p.max() - 1e-7
    return keep


_draw = {c: jax.jit(lambda lg, key, c=c: jax.vmap(
    lambda k: sample_tokens(lg, k, c)[0])(jax.random.split(key, 64))) for c in CONFIGS}


# Subnormal logits are excluded: XLA:CPU flushes them to zero (so -1e-45 ties with 0 on the
# device), while the float64 reference keeps them apart.
@settings(max_examples=30, deadline=None)
@given(logits=hnp.arrays(np.float32, (2, 12),
                         elements=st.floats(-4, 4, width=32, allow_subnormal=False)),
       which=st.integers(0, len(CONFIGS) - 1), seed=st.integers(0, 2**16))
def test_filters_never_emit_a_token_outside_the_allowed_set(logits, which, seed):
    cfg = CONFIGS[which]
    drawn = np.asarray(_draw[cfg](jnp.asarray(logits), jax.random.key(seed)))  # [64, 2]
    for r in range(2):
        keep = allowed_set(logits[r].astype(np.float64), cfg)
        assert keep[drawn[:, r]].all(), (cfg, logits[r], drawn[:, r], keep)


def test_filter_keeps_exactly_the_reference_set():
    logits = jnp.asarray([[0.0, 1.0, 2.0, 3.0, -1.0, 2.5]])
    got = np.isfinite(np.asarray(filter_logits(logits, SamplingConfig(top_k=2))))[0]
    np.testing.assert_array_equal(got, [0, 0, 0, 1, 0, 1])
    # Probabilities ~ [.03,.08,.21,.57,.01,.35]/...: top_p=0.6 keeps tokens 3 and 5.
    got = np.isfinite(np.asarray(filter_logits(logits, SamplingConfig(top_p=0.6))))[0]
    np.testing.assert_array_equal(got, [0, 0, 0, 1, 0, 1])


def test_stop_rules_with_token_delimiter_and_eos(params, prompts):
    """Rows stop at the first delimiter token, at EOS, or at the budget, and nothing of a
    row follows its stop."""
    tokens, mask = prompts
    delim = TOK.encode("aeiou0123456789")
    stop = stop_tokens(CFG.vocab_size, eos_ids=TOK.encode("xyzXYZ"), delimiter_ids=delim)
    out = sample(CFG, params, tokens, mask, jax.random.key(3), max_new_tokens=10, n=16,
                 stop=stop, stop_at_delimiter=True, pad_id=TOK.pad_id)
    toks, lens, why = (np.asarray(x).reshape(32, -1) for x in
                       (out.tokens, out.lengths, out.stop_reason))
    lens, why = lens[:, 0], why[:, 0]
    eos = set(TOK.encode("xyzXYZ"))
    seen = set()
    for row, n, r in zip(toks, lens, why):
        seen.add(int(r))
        body = row[:n - 1].tolist()
        assert not (set(body) & (set(delim) | eos))
        assert (row[n:] == TOK.pad_id).all()
        if r == STOP_DELIMITER:
            assert row[n - 1] in delim
        elif r == STOP_EOS:
            assert row[n - 1] in eos
        else:
            assert r == STOP_LENGTH and n == 10 and row[n - 1] not in set(delim) | eos
    assert seen == {STOP_DELIMITER, STOP_EOS, STOP_LENGTH}


class ScriptedModel:
    """Stands in for the Transformer in ``decode``: row r's next token is always
    ``script[r][number of tokens it was fed]`` (one-hot logits), so stop rules can be
    checked on chosen token sequences."""

    def __init__(self, script, vocab_size):
        self.script = jnp.asarray(script, jnp.int32)
        self.V = vocab_size

    def apply(self, variables, tokens, positions, attention_mask, cache):
        fed = cache + attention_mask[:, 0].astype(jnp.int32)
        nxt = jnp.take_along_axis(self.script, jnp.minimum(fed, self.script.shape[1] - 1)[:, None],
                                  1)
        logits = 30.0 * jax.nn.one_hot(nxt, self.V)
        return ModelOutput(logits=logits, values=fed[:, None].astype(jnp.float32), cache=fed)


def test_string_delimiter_inside_and_across_bpe_tokens(tmp_path):
    """"th" ends a step at the token that completes it: split across tokens ("t" + "he"),
    inside one token ("other"), or never (budget)."""
    text = ["the other thing that they thought through then " * 3, "math with rhythm " * 3]
    sp = train_sentencepiece(text * 20, tmp_path / "sp", vocab_size=300)
    texts = sp.token_texts()
    ids = {t: texts.index(t) for t in ("t", "h", "e", "a", " ")}
    inside = next(i for i, t in enumerate(texts) if "th" in t and not t.endswith("th"))
    script = [[ids["a"], ids["t"], ids["h"], ids["e"], ids["a"], ids["a"]],
              [ids["a"], inside, ids["a"], ids["a"], ids["a"], ids["a"]],
              [ids["t"], ids["a"], ids["h"], ids["e"], ids["t"], ids["h"]]]
    V = sp.vocab_size
    stop = stop_tokens_for(sp, V, delimiter="th")
    model = ScriptedModel(script, V)
    state = DecodeState(cache=jnp.zeros((3,), jnp.int32),
                        logits=30.0 * jax.nn.one_hot(model.script[:, 0], V),
                        value=jnp.zeros((3,)), delim_state=jnp.zeros((3,), jnp.int32),
                        done=jnp.zeros((3,), bool), next_pos=jnp.zeros((3,), jnp.int32),
                        n_tokens=jnp.zeros((3,), jnp.int32))
    greedy = SamplingConfig(temperature=0.0)
    state, chunk, n_iter = generate(model, None, state, jax.random.key(0), greedy, stop, 5, True)
    np.testing.assert_array_equal(chunk.lengths, [3, 2, 5])
    np.testing.assert_array_equal(chunk.stop_reason, [STOP_DELIMITER, STOP_DELIMITER,
                                                      STOP_LENGTH])
    assert int(n_iter) == 5
    # Rows that stopped were fed as empty slots: they consumed exactly their own tokens.
    np.testing.assert_array_equal(state.n_tokens, [3, 2, 5])
    np.testing.assert_array_equal(state.next_pos, [3, 2, 5])
    # Row 2 ended on "t": the partial match carries into its next step, where "h"
    # completes the delimiter after one token.
    np.testing.assert_array_equal(state.delim_state, [0, 0, 1])
    state, chunk, _ = generate(model, None, state, jax.random.key(0), greedy, stop, 5, True)
    assert int(chunk.lengths[2]) == 1 and int(chunk.stop_reason[2]) == STOP_DELIMITER


def test_bad_inputs_give_clear_errors(params, prompts):
    tokens, mask = prompts
    with pytest.raises(SearchError, match=r"max_seq_len 96; shorten the prompts or lower "
                                          r"max_new_tokens \(90\)"):
        sample(CFG, params, tokens, mask, jax.random.key(0), max_new_tokens=90)
    long = np.ones((2, CFG.max_seq_len + 4), np.int32)  # the prompt alone overflows
    with pytest.raises(SearchError, match="prompt length 100 .* exceeds the model's max_seq_len"):
        sample(CFG, params, long, long, jax.random.key(0), max_new_tokens=1)
    with pytest.raises(SearchError, match="n must be a positive integer"):
        sample(CFG, params, tokens, mask, jax.random.key(0), max_new_tokens=4, n=0)
    with pytest.raises(SearchError, match="decode_chunks must be a positive integer"):
        sample(CFG, params, tokens, mask, jax.random.key(0), max_new_tokens=4, decode_chunks=0)
    with pytest.raises(SearchError, match="prompt_mask has shape"):
        sample(CFG, params, tokens, mask[:, :3], jax.random.key(0), max_new_tokens=4)
    with pytest.raises(SearchError, match="have no tokens"):
        sample(CFG, params, tokens, np.zeros_like(mask), jax.random.key(0), max_new_tokens=4)
    with pytest.raises(SearchError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(SearchError, match="outside the model's vocabulary"):
        stop_tokens(CFG.vocab_size, eos_ids=[CFG.vocab_size])


@pytest.mark.parametrize("method", ["best_of_n", "beam", "dvts", "particles", "mcts"])
def test_prompt_longer_than_context_fails_in_every_method(params, method):
    """Every search checks prompt + its whole token budget against the context before
    compiling anything, and names the lengths and the fix."""
    long = np.ones((2, CFG.max_seq_len + 4), np.int32)
    stop = stop_tokens(CFG.vocab_size, eos_ids=[TOK.eos_id])
    run = {"best_of_n": lambda: best_of_n(CFG, params, long, long, KEY,
                                          BestOfNConfig(n=2, max_steps=1, step_tokens=2), stop),
           "beam": lambda: beam_search(CFG, params, long, long, KEY,
                                       BeamConfig(n=2, beam_width=1, max_steps=1,
                                                  step_tokens=2), stop),
           "dvts": lambda: dvts(CFG, params, long, long, KEY,
                                BeamConfig(n=2, beam_width=1, max_steps=1, step_tokens=2), stop),
           "particles": lambda: particle_filter(CFG, params, long, long, KEY,
                                                ParticleConfig(n=2, max_steps=1, step_tokens=2),
                                                stop),
           "mcts": lambda: mcts(CFG, params, long, long, KEY,
                                MCTSConfig(num_actions=2, num_simulations=1, max_steps=1,
                                           step_tokens=2), stop)}[method]
    with pytest.raises(SearchError, match=r"prompt length 100 \+ token budget 2 = 102 exceeds "
                                          r"the model's max_seq_len 96; shorten the prompts "
                                          r"or lower max_steps x step_tokens \(1 x 2\)"):
        run()


def test_cyclic_reflex_bias_by_hand():
    """A = 2, T = 8: the wave is 0 at t = 0, +A at T/4, 0 at T/2, -A at 3T/4, and repeats;
    only the reflection tokens' columns move."""
    cycle = CyclicReflex(token_ids=(3, 7), amplitude=2.0, period=8.0)
    position = np.asarray([0, 1, 2, 3, 4, 6, 7, 8, 10, 22])
    bias = np.asarray([0.0, 1.0, 2.0, 1.0, 0.0, -2.0, -1.0, 0.0, 2.0, -2.0])
    logits = np.asarray(jax.random.normal(KEY, (len(position), 12)))
    want = logits.copy()
    want[:, 3] += bias
    want[:, 7] += bias
    got = reflect_logits(jnp.asarray(logits), jnp.asarray(position), cycle)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # Greedy picks the argmax of the biased logits; the log-prob stays the model's.
    greedy = SamplingConfig(temperature=0.0, reflection=cycle)
    tok, logp = sample_tokens(jnp.asarray(logits), KEY, greedy, jnp.asarray(position))
    np.testing.assert_array_equal(tok, want.argmax(-1))
    model_logp = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), -1))
    np.testing.assert_allclose(logp, model_logp[np.arange(len(position)), tok], atol=1e-6)


def test_cyclic_reflex_off_changes_nothing(params, prompts):
    """Amplitude 0 traces no bias (the same program as no schedule) and draws the same
    tokens as the plain sampler."""
    tokens, mask = prompts
    plain = SamplingConfig(temperature=1.0, top_p=0.9)
    off = SamplingConfig(temperature=1.0, top_p=0.9,
                         reflection=CyclicReflex(token_ids=(5, 9), amplitude=0.0))
    trace = lambda s: str(jax.make_jaxpr(lambda x, k, t: sample_tokens(x, k, s, t))(
        jnp.zeros((2, CFG.vocab_size)), KEY, jnp.zeros(2, jnp.int32)))
    assert trace(off) == trace(plain)
    a = sample(CFG, params, tokens, mask, KEY, max_new_tokens=10, n=2, sampling=plain,
               stop=NO_STOP)
    b = sample(CFG, params, tokens, mask, KEY, max_new_tokens=10, n=2, sampling=off,
               stop=NO_STOP)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.logprobs, b.logprobs)


def test_cyclic_reflex_flips_greedy_exactly_past_the_margin(params, prompts):
    """Period 8: the bias on token r is 0, A/2, A at positions 0, 1, 2. With A just above
    r's margin below the greedy token at position 2 (and A/2 below its margin at 1), greedy
    decoding follows the unbiased path for two tokens and emits r third; just below the
    margin nothing changes."""
    tokens, mask = prompts[0][:1], prompts[1][:1]
    ref_tok, _, logits = full_forward_greedy(params, tokens, mask, 3)
    g, L = ref_tok[0], logits[0]  # [3], [3, V]
    margin = L[np.arange(3), g][:, None] - L  # [3, V] how far each token is below greedy
    ok = (margin[1] > margin[2] / 2 + 0.1) & ~np.isin(np.arange(CFG.vocab_size), g)
    r = int(np.flatnonzero(ok)[np.argmin(margin[2][ok])])

    def run(amplitude):
        cycle = CyclicReflex(token_ids=(r,), amplitude=float(amplitude), period=8.0)
        return sample(CFG, params, tokens, mask, KEY, max_new_tokens=3,
                      sampling=SamplingConfig(temperature=0.0, reflection=cycle), stop=NO_STOP)

    above = run(margin[2, r] + 0.05)
    np.testing.assert_array_equal(above.tokens[0, 0], [g[0], g[1], r])
    log_softmax = np.asarray(jax.nn.log_softmax(jnp.asarray(L[2])))
    assert float(above.logprobs[0, 0, 2]) == pytest.approx(float(log_softmax[r]), abs=1e-5)
    below = run(margin[2, r] - 0.05)
    np.testing.assert_array_equal(below.tokens[0, 0], g)


def test_cyclic_reflex_bad_settings_name_the_field(params, prompts):
    with pytest.raises(ConfigError, match="amplitude: must be >= 0"):
        CyclicReflex(token_ids=(1,), amplitude=-1.0)
    with pytest.raises(ConfigError, match="period: must be > 0"):
        CyclicReflex(token_ids=(1,), amplitude=1.0, period=0.0)
    with pytest.raises(ConfigError, match="token_ids: amplitude > 0 needs"):
        CyclicReflex(amplitude=1.0)
    with pytest.raises(ConfigError, match="lists an id twice"):
        CyclicReflex(token_ids=(4, 4), amplitude=1.0)
    with pytest.raises(ConfigError, match="reflection.amplitude: must be >= 0"):
        from_dict(SamplingConfig, {"reflection": {"token_ids": [3], "amplitude": -2}})
    tokens, mask = prompts
    far = SamplingConfig(reflection=CyclicReflex(token_ids=(CFG.vocab_size,), amplitude=1.0))
    with pytest.raises(SearchError, match=r"reflection token ids \[100\] are outside"):
        sample(CFG, params, tokens, mask, KEY, max_new_tokens=2, sampling=far)
