"""Token log-probs (alignment, masking, padding) and the SFT loss against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax.train.logprobs import masked_sum, shift_values, token_logprobs
from reasonjax.train.sft import SFTConfig, masked_thought_inputs, sft_loss


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_token_logprobs_align_logits_t_minus_1_with_token_t():
    logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]]))
    tokens = np.array([[2, 1, 0]])
    got = np.asarray(token_logprobs(jnp.asarray(logits), jnp.asarray(tokens)))
    # token 1 (=1) is predicted by logits[0]: p=0.25; token 2 (=0) by logits[1]: p=0.1.
    np.testing.assert_allclose(got, np.log([[1.0, 0.25, 0.1]]), rtol=1e-6)
    mask = np.array([[0.0, 1.0, 0.0]])
    np.testing.assert_allclose(masked_sum(got, mask), [np.log(0.25)], rtol=1e-6)


def test_shift_values_puts_the_prefix_value_on_the_next_token():
    v = jnp.array([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(shift_values(v), [[0.0, 1.0, 2.0]])


@pytest.fixture(scope="module")
def sft_fn(tiny_config):
    return jax.jit(sft_loss(tiny_config).fn)


def _numpy_sft(apply_fn, config, params, batch):
    logits = np.asarray(apply_fn(config, params, batch["tokens"], batch["positions"],
                                 batch["segment_ids"]).logits)
    lp = _np_log_softmax(logits)
    total, count = 0.0, 0.0
    B, T = batch["tokens"].shape
    for b in range(B):
        for t in range(1, T):
            w = batch["loss_mask"][b, t]
            total += -w * lp[b, t - 1, batch["tokens"][b, t]]
            count += w
    return total / count


def test_sft_loss_is_mean_nll_of_masked_tokens_and_ignores_padding(
        tiny_config, tiny_params, sft_fn, rows, apply_fn):
    batch = rows([[1, 2, 3], [4, 5]], [[6, 7], [8, 9, 10, 11]], T=8)
    loss, metrics = sft_fn(tiny_params, batch, jax.random.key(0), None)
    np.testing.assert_allclose(loss, _numpy_sft(apply_fn, tiny_config, tiny_params, batch), rtol=1e-5)
    assert float(metrics["target_tokens"]) == 6
    # Padding tokens (segment 0, loss_mask 0) change nothing.
    padded = {k: v.copy() for k, v in batch.items()}
    padded["tokens"][0, 5:] = 17
    loss2, _ = sft_fn(tiny_params, padded, jax.random.key(0), None)
    np.testing.assert_allclose(loss2, loss, rtol=1e-6)
    # Prompt tokens are context only: loss_mask weights exactly the completion.
    heavy = {**batch, "loss_mask": batch["loss_mask"] * 2.0}
    loss3, _ = sft_fn(tiny_params, heavy, jax.random.key(0), None)
    np.testing.assert_allclose(loss3, loss, rtol=1e-6)


def test_masked_thought_masks_only_solution_inputs_and_keeps_targets(
        tiny_config, tiny_params, rows, apply_fn):
    batch = rows([[1, 2, 3, 4]] * 64, [list(range(5, 29))] * 64, T=28)
    mask = batch["loss_mask"]
    masked = np.asarray(masked_thought_inputs(jnp.asarray(batch["tokens"]), jnp.asarray(mask),
                                              jax.random.key(3), 0.25, 0))
    changed = masked != batch["tokens"]
    assert not changed[mask == 0].any()
    assert abs(changed[mask > 0].mean() - 0.25) < 0.05  # 4.5 sigma over 1536 draws
    # The loss reads the masked inputs but the original targets.
    cfg = SFTConfig(mask_prob=0.25, mask_token_id=0)
    small = rows([[1, 2, 3]] * 2, [[6, 7, 8, 9]] * 2, T=8)
    loss, _ = jax.jit(sft_loss(tiny_config, cfg).fn)(tiny_params, small, jax.random.key(5), None)
    inputs = np.asarray(masked_thought_inputs(jnp.asarray(small["tokens"]),
                                              jnp.asarray(small["loss_mask"]),
                                              jax.random.key(5), 0.25, 0))
    logits = np.asarray(apply_fn(tiny_config, tiny_params, inputs, small["positions"],
                                 small["segment_ids"]).logits)
    lp = _np_log_softmax(logits)
    nll = [-lp[b, t - 1, small["tokens"][b, t]] for b in range(2) for t in range(3, 7)]
    np.testing.assert_allclose(loss, np.mean(nll), rtol=1e-5)
    with pytest.raises(ValueError, match="mask_prob"):
        sft_loss(tiny_config, SFTConfig(mask_prob=1.0))
    # No id is assumed: 0 is '!' in Llama 3 / Qwen2 vocabularies.
    with pytest.raises(ValueError, match="mask_token_id is unset"):
        sft_loss(tiny_config, SFTConfig(mask_prob=0.25))


def test_masked_thought_masks_with_the_tokenizers_pad_id():
    from reasonjax.models import CharTokenizer
    from reasonjax.train.sft import with_mask_token

    class Padded:
        pad_id = 7

    assert with_mask_token(SFTConfig(mask_prob=0.1), Padded()).mask_token_id == 7
    assert with_mask_token(SFTConfig(mask_prob=0.1, mask_token_id=3), Padded()) \
        .mask_token_id == 3
    assert with_mask_token(SFTConfig(), CharTokenizer()).mask_token_id == \
        CharTokenizer().pad_id
