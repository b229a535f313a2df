"""Recipe scaffolding: environments, in-memory batches, warm-up, presets and bad config."""

import numpy as np
import pytest

from reasonjax.config import ConfigError
from reasonjax.data import formatting
from reasonjax.driver import run as run_driver
from reasonjax.driver.records import greedy_accuracy
from reasonjax.recipes import common
from reasonjax.search.mcts import MCTSConfig
from reasonjax.search.sampler import SampleConfig
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


def test_disjoint_env_has_no_eval_question_in_training():
    knobs = {"height": 3, "width": 3, "wall_prob": 0.25, "min_distance": 3, "trace": True}
    spec = common.TaskSpec(name="maze", difficulty=None, knobs=knobs, train_size=300,
                           eval_size=40, seed=5)
    leaky = common.make_env(spec, common.ModelSpec(), num_devices=1)
    asked = {p.question for p in leaky.eval}
    assert sum(p.question in asked for p in leaky.train) > 0  # 3x3 mazes collide
    env = common.make_env(common.TaskSpec(**{**vars(spec), "disjoint": True}),
                          common.ModelSpec(), num_devices=1)
    assert [p.question for p in env.eval] == [p.question for p in leaky.eval]
    assert len(env.train) == 300 and not any(p.question in asked for p in env.train)
    # the kept problems are the stream's own, in order: the leaky list minus the eval ones
    kept = [p.question for p in leaky.train if p.question not in asked]
    assert [p.question for p in env.train][:len(kept)] == kept
    with pytest.raises(ConfigError, match="task.disjoint: only .* fewer than task.train_size"):
        common.disjoint_problems(leaky.task, 5, 0, leaky.task.generate(2000, seed=0))


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
    assert 0.0 <= greedy_accuracy(env, first, env.eval, 16) <= 1.0


def test_split_train_keeps_warmup_and_recipe_problems_apart():
    env = common.make_env(common.TaskSpec(train_size=6, eval_size=2), common.ModelSpec(),
                          num_devices=1)
    warm, own = common.split_train(env, 4)
    assert warm.train == env.train[:4] and own == env.train[4:] and warm.eval == env.eval
    assert common.split_train(env, 0) == (env, env.train)
    with pytest.raises(ValueError, match="warmup_problems=6"):
        common.split_train(env, 6)


def test_sampling_and_search_on_a_mesh_equal_one_device():
    """Recipes sample and search with the prompt rows split over the mesh's data axes;
    the completions, verdicts and search trees are those of one device."""
    import jax

    from reasonjax import parallel
    from reasonjax.recipes import mcts_data

    task = common.TaskSpec(train_size=8, eval_size=8)
    one = common.make_env(task, common.ModelSpec(), num_devices=1)
    four = common.make_env(task, common.ModelSpec(), parallel.MeshConfig(data=4),
                           num_devices=4)
    host = parallel.init_params(one.model_config, jax.random.key(0))
    results = []
    two = SampleConfig(n=2, max_new_tokens=12)
    spec = MCTSConfig(num_actions=2, num_simulations=3, max_steps=2, step_tokens=6,
                      terminal_reward="verifier")
    for env in (one, four):
        params = parallel.shard_params(host, env.model_config, env.mesh)
        s = run_driver(env, params, env.eval[:6], two, jax.random.key(1), batch_size=4)
        found = mcts_data.search(env, params, env.train[:4], [0, 1, 2, 3], spec,
                                 jax.random.key(2), batch_size=4)
        results.append(([[(c.completion, c.correct, c.tokens) for c in r.candidates]
                         for r in s], found))
    (s1, f1), (s4, f4) = results
    assert s1 == s4 and len(s1) == 6
    assert f1.tokens_generated == f4.tokens_generated
    for (ids1, t1), (ids4, t4) in zip(f1.trees, f4.trees):
        np.testing.assert_array_equal(ids1, ids4)
        for k in t1:
            np.testing.assert_allclose(t1[k], t4[k], atol=1e-5, err_msg=k)
    with pytest.raises(ConfigError, match="batch_size=6 is not divisible by the data axes"):
        run_driver(four, params, four.eval[:6], SampleConfig(n=1, max_new_tokens=4),
                   jax.random.key(1), batch_size=6)
