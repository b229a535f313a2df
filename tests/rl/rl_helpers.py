"""A toy task whose expected reward is exact: the probability that the first completion
character is a lowercase letter; shared by the RL tests."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from reasonjax.data.task import Problem, Task
from reasonjax.driver import Env, encode_prompts
from reasonjax.models import ModelConfig, Transformer
from reasonjax.models.tokenizer import CharTokenizer

TOK = CharTokenizer()
CFG = ModelConfig(vocab_size=TOK.vocab_size, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2,
                  d_ff=64, max_seq_len=32)
GOOD = "abcdefghijklmnopqrstuvwxyz"


def rollouts(params, problems, rng, n: int, max_new_tokens: int, prompt_len: int = 5):
    """n sampled rollouts of each problem on the toy task, through the driver."""
    from reasonjax.driver.rollouts import collect
    from reasonjax.search.sampler import SampleConfig

    env = Env(TASK, TOK, CFG, prompt_len=prompt_len)
    return collect(env, params, problems, SampleConfig(n=n, max_new_tokens=max_new_tokens),
                   rng)


@dataclasses.dataclass(frozen=True)
class FirstLetter(Task):
    """Correct iff the completion starts with a lowercase letter."""

    name = "first_letter_toy"

    def extract_answer(self, text):
        return text[:1] or None

    def answer_correct(self, problem, answer):
        return answer in GOOD


TASK = FirstLetter()
PROBLEMS = [Problem(task=TASK.name, question=q, steps=(), answer="") for q in ("ab", "7+1",
                                                                              "xyz", "Q")]


def expected_reward(params) -> float:
    """Mean over the problems of P(first completion token is a lowercase letter)."""
    prompts = encode_prompts(Env(TASK, TOK, CFG, prompt_len=5), PROBLEMS)
    tokens, mask = prompts.tokens, prompts.mask
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
    out = Transformer(CFG).apply({"params": params}, jnp.asarray(tokens),
                                 positions=jnp.asarray(positions),
                                 attention_mask=jnp.asarray(mask))
    probs = jax.nn.softmax(out.logits[:, -1], -1)
    good = [TOK.encode(c)[0] for c in GOOD]
    return float(jnp.mean(jnp.sum(probs[:, good], -1)))

ENV = Env(TASK, TOK, CFG)
