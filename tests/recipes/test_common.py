"""Recipe scaffolding: environments, in-memory batches, warm-up, presets and bad config."""

import numpy as np
import pytest

from reasonjax.config import ConfigError
from reasonjax.data import formatting
from reasonjax.recipes import common
from reasonjax.recipes.replicate import RECIPES, load_config, preset_path
from reasonjax.recipes.rundir import open_run
from reasonjax.train.fit import rows_iterator


def test_env_keeps_train_and_eval_apart_and_is_deterministic():
    spec = common.TaskSpec(train_size=20, eval_size=6, seed=3)
    a = common.make_env(spec, common.ModelSpec(), num_devices=1)
    b = common.make_env(spec, common.ModelSpec(), num_devices=1)
    assert [p.question for p in a.train] == [p.question for p in b.train]
    assert len(a.train) == 20 and len(a.eval) == 6
    assert a.model_config.vocab_size == a.tokenizer.vocab_size
    assert [p.meta for p in a.eval] != [p.meta for p in a.train[:6]]


def test_examples_become_rows_and_every_row_is_seen_once_per_epoch():
    tok = common.CharTokenizer()
    examples = [formatting.encode_completion(tok, f"{i}+1\n", str(i + 1)) for i in range(10)]
    rows = common.examples_to_rows(examples, "sft", 12)
    assert rows["tokens"].shape == (10, 12)
    it = rows_iterator(rows, 4, seed=0)  # 10 rows, batch 4: batches span epochs
    drawn = np.concatenate([next(it)["tokens"] for _ in range(5)])  # 20 rows: two epochs
    for epoch in (drawn[:10], drawn[10:]):
        assert sorted(map(tuple, epoch)) == sorted(map(tuple, rows["tokens"]))
    with pytest.warns(UserWarning, match="1 of 1 sft examples are longer than seq_len=3"):
        common.examples_to_rows(examples[:1], "sft", 3)


def test_paper_settings_without_paths_are_named():
    with pytest.raises(ConfigError, match="task.data_file"):
        common.make_env(common.TaskSpec(name="gsm8k"), common.ModelSpec(), num_devices=1)
    with pytest.raises(ConfigError, match="model.checkpoint"):
        common.make_env(common.TaskSpec(), common.ModelSpec(preset=None), num_devices=1)


def test_every_recipe_has_both_presets_and_overrides_are_checked():
    for name in RECIPES:
        for preset in ("tiny", "paper"):
            assert preset_path(name, preset).is_file(), (name, preset)
        load_config(name, "tiny")
    with pytest.raises(ConfigError, match="unknown recipe"):
        load_config("alphamth")
    with pytest.raises(ConfigError, match="task.nope"):
        load_config(RECIPES[0], "tiny", ["task.nope=1"])


def test_warmup_trains_then_loads_from_the_run_directory(tmp_path):
    env = common.make_env(common.TaskSpec(train_size=32, eval_size=4), common.ModelSpec(),
                          num_devices=1)
    run = open_run(tmp_path, {"seed": 0})
    spec = common.FitSpec(steps=3, batch_size=4, seq_len=32)
    first = common.warmup(run, env, spec)
    again = common.warmup(run, env, spec)  # loaded, not retrained
    np.testing.assert_array_equal(np.asarray(first["embed"]["embedding"]),
                                  np.asarray(again["embed"]["embedding"]))
    assert 0.0 <= common.greedy_accuracy(env, first, env.eval, 16) <= 1.0
