"""Prompt formats: template, few-shot exemplars (built-in and from a file), the
tokenizer's chat template with a system message, and answer extraction without the
last-number fallback."""

import json

import pytest

from reasonjax.config import ConfigError
from reasonjax.data import prompting
from reasonjax.data.local import load_local
from reasonjax.data.prompting import PromptSpec
from reasonjax.data.task import get_task
from reasonjax.models.tokenizer import load_tokenizer

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def chat_tok(tmp_path_factory, bpe_tokenizer_dir):
    """A tiny HF BPE tokenizer whose tokenizer_config.json carries a ChatML template."""
    texts = [f"Question {i}: what is {i} + {i}?\n" for i in range(100)]
    return load_tokenizer(bpe_tokenizer_dir(tmp_path_factory.mktemp("chat"), texts, 300, {
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None,
        "chat_template": CHATML}))


def problem(task, q="What is 2 + 3?", a="5"):
    return task.from_instance(question=q, answer=a)


def test_default_format_is_the_plain_question():
    task = prompting.configure(get_task("gsm8k"), PromptSpec())
    assert task.prompt(problem(task)) == "What is 2 + 3?\n"


def test_template_and_builtin_few_shot():
    spec = PromptSpec(template="Question: {question}\nAnswer:", few_shot=2,
                      exemplar="Question: {question}\nAnswer: {solution}\n\n")
    task = prompting.configure(get_task("gsm8k"), spec)
    (q1, s1), (q2, s2) = prompting.EXEMPLARS["gsm8k"][:2]
    assert task.prompt(problem(task)) == (f"Question: {q1}\nAnswer: {s1}\n\n"
                                          f"Question: {q2}\nAnswer: {s2}\n\n"
                                          "Question: What is 2 + 3?\nAnswer:")


def test_few_shot_from_a_file_is_seeded_and_in_the_tasks_solution_format(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"s{i}\n#### {i}"}) + "\n"
                         for i in range(10)))
    spec = PromptSpec(few_shot=3, few_shot_file=str(f), few_shot_seed=1)
    shots = prompting.exemplars(spec, "gsm8k")
    assert shots == prompting.exemplars(spec, "gsm8k") and len(shots) == 3
    pool = {p.question: p for p in load_local(f, "gsm8k").problems}
    for q, s in shots:
        assert s == get_task("gsm8k").solution(pool[q])  # "s3\n#### 3"
    other = prompting.exemplars(PromptSpec(few_shot=3, few_shot_file=str(f),
                                           few_shot_seed=2), "gsm8k")
    assert other != shots
    with pytest.raises(ConfigError, match="has only 10"):
        prompting.exemplars(PromptSpec(few_shot=11, few_shot_file=str(f)), "gsm8k")


def test_chat_template_with_system_message(chat_tok):
    spec = PromptSpec(template="{question}\nPut the answer in \\boxed{}.", chat=True,
                      system="Be brief.")
    task = prompting.configure(get_task("math"), spec, chat_tok)
    text = task.prompt(problem(task, "Compute $1+1$.", "2"))
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                    "<|im_start|>user\nCompute $1+1$.\nPut the answer in \\boxed{}.<|im_end|>\n"
                    "<|im_start|>assistant\n")
    ids = chat_tok.encode(text)
    # the chat markers are the special tokens, not their characters
    assert ids.count(chat_tok.tk.token_to_id("<|im_start|>")) == 3


def test_chat_needs_a_template_and_builtin_tasks_keep_their_format():
    from reasonjax.models.tokenizer import CharTokenizer

    with pytest.raises(ConfigError, match="no chat template"):
        prompting.configure(get_task("math"), PromptSpec(chat=True), CharTokenizer())
    with pytest.raises(ConfigError, match="fixed prompt format"):
        prompting.configure(get_task("arithmetic"), PromptSpec(few_shot=1))
    with pytest.raises(ConfigError, match="needs prompt.chat=true"):
        PromptSpec(system="x")


def test_answers_follow_the_marks_and_junk_is_not_an_answer():
    gsm = get_task("gsm8k")
    p = problem(gsm, a="72")
    assert gsm.verify(p, "so 8 * 9 = 72\n#### 72")
    assert gsm.verify(p, "... The answer is 72.")
    assert gsm.extract_answer("3 apples and 72 pears") is None  # no mark: no answer
    loose = prompting.configure(gsm, PromptSpec(answer_fallback=True))
    assert loose.extract_answer("3 apples and 72 pears") == "72"
    few_shot = prompting.configure(gsm, PromptSpec(stop=("\nQuestion:",)))
    assert few_shot.verify(p, "#### 72\nQuestion: next one?\nAnswer: #### 5")
    assert not gsm.verify(p, "#### 72\nQuestion: next one?\nAnswer: #### 5")
    math = get_task("math")
    assert math.extract_answer("x = 4 so the answer is 4.") == "4"
    assert math.extract_answer("we get 4") is None
