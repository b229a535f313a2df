"""Run directories: phases resume after an interruption; configs must match to resume."""

import dataclasses
import json
from typing import Optional

import jax
import numpy as np
import pytest

from reasonjax.errors import RunDirError
from reasonjax.config import read_yaml, save_yaml
from reasonjax.models import ModelConfig, init_params
from reasonjax.recipes.rundir import completed_phases, log_metrics, open_run, run_phase

CFG = ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_ff=32,
                  max_seq_len=16)


@dataclasses.dataclass(frozen=True)
class _TaskFile:
    data_file: str = ""


@dataclasses.dataclass(frozen=True)
class Files:
    """A config with an input file (its fingerprint is checked on resume)."""

    task: _TaskFile = _TaskFile()


@dataclasses.dataclass(frozen=True)
class Cfg:
    rounds: int = 2
    lr: float = 0.1


class Interrupt(Exception):
    pass


def _recipe(path, calls, fail_at=None):
    run = open_run(path, Cfg(), total_phases=3)
    a = run_phase(run, "init", lambda: calls.append("init") or {
        "params": init_params(CFG, jax.random.key(0)), "model_config": CFG, "acc": 0.1})

    def round_one():
        calls.append("round-1")
        if fail_at == "round-1":
            raise Interrupt()
        return {"acc": a["acc"] + 0.2, "pairs": [[1, 2], [3, 4]]}

    b = run_phase(run, "round-1", round_one)
    c = run_phase(run, "round-2", lambda: calls.append("round-2") or {"acc": b["acc"] + 0.3})
    log_metrics(run, {"final": c["acc"]})
    return a, b, c


def test_interrupted_recipe_resumes_from_last_completed_phase(tmp_path):
    calls = []
    with pytest.raises(Interrupt):
        _recipe(tmp_path, calls, fail_at="round-1")
    assert calls == ["init", "round-1"]
    run = open_run(tmp_path, Cfg())
    assert completed_phases(run) == ["init"]
    assert not any(p.name.startswith(".") for p in (tmp_path / "phases").iterdir())

    calls.clear()
    a, b, c = _recipe(tmp_path, calls)
    assert calls == ["round-1", "round-2"]          # init was loaded, not recomputed
    assert a["model_config"] == CFG
    ref = init_params(CFG, jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, a["params"], ref)
    assert b["pairs"] == [[1, 2], [3, 4]] and c["acc"] == pytest.approx(0.6)

    calls.clear()
    _recipe(tmp_path, calls)
    assert calls == []
    # The run that finished logged the final line; the rerun that loaded every phase
    # logs the same record, which is not repeated.
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["final"] for x in lines] == [pytest.approx(0.6)]
    log_metrics(open_run(tmp_path, Cfg()), {"final": 0.7})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["final"] for x in lines] == [pytest.approx(0.6), 0.7]


def test_resuming_with_another_config_is_refused_once_a_phase_completed(tmp_path, capsys):
    open_run(tmp_path, Cfg())
    open_run(tmp_path, Cfg(lr=0.2))   # nothing completed yet: the new config replaces it
    assert "holds no results yet; its settings are replaced (lr: 0.1 -> 0.2)" in \
        capsys.readouterr().err
    run_phase(open_run(tmp_path, Cfg(lr=0.2)), "a", lambda: {"x": 1})
    with pytest.raises(RunDirError, match=r"other settings \(lr: 0.2 -> 0.5\)"):
        open_run(tmp_path, Cfg(lr=0.5))


def test_a_changed_input_file_is_refused_once_a_phase_completed(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "1+1", "answer": "2"}\n')
    run = open_run(tmp_path / "run", Files(_TaskFile(str(data))))
    run_phase(run, "a", lambda: {"x": 1})
    open_run(tmp_path / "run", Files(_TaskFile(str(data))))           # unchanged: resumes
    data.write_text('{"question": "1+1", "answer": "3"}\n')
    with pytest.raises(RunDirError, match=r"task.data_file: '[0-9a-f]+' -> '[0-9a-f]+'"):
        open_run(tmp_path / "run", Files(_TaskFile(str(data))))


@dataclasses.dataclass(frozen=True)
class _Inner:
    steps: int = 3
    ratio: float = 1.0  # "added since the run started" below


@dataclasses.dataclass(frozen=True)
class Grown:
    rounds: int = 2
    inner: _Inner = _Inner()
    extra: Optional[_Inner] = None  # "added since the run started" below


def _as_older_code_wrote_it(path):
    """config.yaml as written before `ratio` and `extra` existed."""
    saved = read_yaml(path / "config.yaml")
    del saved["extra"], saved["inner"]["ratio"]
    save_yaml(saved, path / "config.yaml")


def test_fields_added_since_the_run_started_resume_at_their_defaults(tmp_path):
    run_phase(open_run(tmp_path, Grown(rounds=3)), "a", lambda: {"x": 1})
    _as_older_code_wrote_it(tmp_path)
    run = open_run(tmp_path, Grown(rounds=3))   # new fields at their defaults: resumes
    assert completed_phases(run) == ["a"]
    assert read_yaml(tmp_path / "config.yaml") == {"rounds": 3, "extra": None,
                                                  "inner": {"steps": 3, "ratio": 1.0}}
    _as_older_code_wrote_it(tmp_path)
    with pytest.raises(RunDirError, match=r"other settings \(inner.ratio: None -> 2.0\)"):
        open_run(tmp_path, Grown(rounds=3, inner=_Inner(ratio=2.0)))
    with pytest.raises(RunDirError, match=r"other settings \(extra: None -> \{"):
        open_run(tmp_path, Grown(rounds=3, extra=_Inner()))
    with pytest.raises(RunDirError, match=r"other settings \(rounds: 3 -> 4\)"):
        open_run(tmp_path, Grown(rounds=4))


@pytest.mark.parametrize("kind", ["char", "hf"])
def test_phase_models_carry_the_run_tokenizer_and_load_with_it(tmp_path, kind,
                                                                bpe_tokenizer_dir):
    from reasonjax.checkpoint import load_model_and_tokenizer
    from reasonjax.models.hf import TOKENIZER_FILES
    from reasonjax.models.tokenizer import CharTokenizer, HFTokenizer
    from reasonjax.recipes.rundir import keep_tokenizer

    if kind == "char":
        tok = CharTokenizer()
    else:
        (tmp_path / "src").mkdir()
        src = bpe_tokenizer_dir(tmp_path / "src", ["3 + 4 = 7", "12 - 5 = 7"], 300,
                                {"eos_token": "<|endoftext|>"})
        tok = HFTokenizer(src / "tokenizer.json")
    config = dataclasses.replace(CFG, vocab_size=tok.vocab_size)
    run = open_run(tmp_path / "run", Cfg())
    before = run_phase(run, "before", lambda: {"params": init_params(config, jax.random.key(0)),
                                               "model_config": config})
    assert before["params"] is not None
    keep_tokenizer(run, tok)
    keep_tokenizer(run, tok)  # once per run directory: a second call (a resume) keeps it
    run_phase(run, "after", lambda: {"params": init_params(config, jax.random.key(1)),
                                     "model_config": config})
    # a phase saved before the run kept its tokenizer has none; one saved after loads whole
    before_dir = tmp_path / "run" / "phases" / "before" / "model"
    assert not any((before_dir / name).exists() for name in TOKENIZER_FILES)
    loaded_config, _, loaded = load_model_and_tokenizer(tmp_path / "run" / "phases" / "after"
                                                        / "model")
    assert loaded_config == config
    assert type(loaded) is type(tok)
    text = "3 + 4 = 7"
    assert loaded.encode(text) == tok.encode(text)
