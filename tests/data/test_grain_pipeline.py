"""grain pipelines: determinism, epochs, sharding, packing, prompt indices, overflow, and
exact resumption from an orbax-checkpointed iterator state."""

import json
from collections import Counter

import jax.numpy as jnp
import numpy as np
import pytest

from reasonjax import checkpoint
from reasonjax.data import formatting
from reasonjax.data import pipeline as pl
from reasonjax.data.formats import check_batch
from reasonjax.data.task import get_task
from reasonjax.models.tokenizer import CharTokenizer

TOK = CharTokenizer()
TASK = get_task("arithmetic", "easy")


def _sft(source, **kw):
    args = dict(kind="sft", seq_len=32, batch_size=4, seed=7, shard_index=0, shard_count=1)
    args.update(kw)
    return pl.make_pipeline(source, pl.sft_encoder(TOK), **args)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _texts(batch):
    return [TOK.decode(row[seg > 0]) for row, seg in zip(batch["tokens"], batch["segment_ids"])]


def _same(a, b):
    return all(set(x) == set(y) and all(np.array_equal(x[k], y[k]) for k in x)
               for x, y in zip(a, b))


def test_epochs_cover_every_record_once_and_reshuffle():
    source = pl.task_source(TASK, 12, seed=1)
    expected = Counter(TASK.prompt(p) + TASK.solution(p) for p in TASK.generate(12, seed=1))
    batches = _take(iter(_sft(source).dataset), 6)  # two epochs of 3 batches
    for b in batches:
        check_batch(b, "sft")
        assert b["tokens"].shape == (4, 32)
    epoch1 = [t for b in batches[:3] for t in _texts(b)]
    epoch2 = [t for b in batches[3:] for t in _texts(b)]
    assert Counter(epoch1) == expected == Counter(epoch2)
    assert epoch1 != epoch2  # a new permutation each epoch
    assert _same(batches, _take(iter(_sft(source).dataset), 6))  # same seed, same batches
    assert not _same(batches, _take(iter(_sft(source, seed=8).dataset), 6))


def test_shards_are_disjoint_and_cover_the_source():
    problems = TASK.generate(16, seed=2)
    seen = []
    for shard in range(2):
        p = _sft(problems, shard_index=shard, shard_count=2, num_epochs=1, batch_size=2)
        seen.append([t for b in p.dataset for t in _texts(b)])
    assert len(seen[0]) == len(seen[1]) == 8
    assert Counter(seen[0] + seen[1]) == Counter(TASK.prompt(p) + TASK.solution(p)
                                                 for p in problems)
    odd = [len(list(_sft(problems[:15], shard_index=s, shard_count=2, num_epochs=1,
                             batch_size=1).dataset)) for s in range(2)]
    assert odd == [7, 7]  # equal shards: one record dropped
    with pytest.raises(ValueError, match="shard_index"):
        _sft(problems, shard_index=2, shard_count=2)


def test_packing_keeps_sequences_whole():
    problems = TASK.generate(30, seed=3)
    originals = {}
    for p in problems:
        ex = formatting.encode_completion(TOK, TASK.prompt(p), TASK.solution(p))
        originals[tuple(ex["tokens"])] = ex["loss_mask"]
    got, rows_with_several = [], 0
    for b in _sft(problems, pack=True, seq_len=64, num_epochs=1, drop_remainder=False).dataset:
        check_batch(b, "sft")
        for row in range(b["tokens"].shape[0]):
            seg = b["segment_ids"][row]
            n = int((seg > 0).sum())  # real tokens first, segments in order, then padding
            assert (seg[:n] > 0).all() and (seg[n:] == 0).all() and (np.diff(seg[:n]) >= 0).all()
            rows_with_several += seg.max() > 1
            for s in sorted(set(seg.tolist()) - {0}):
                sel = seg == s
                toks = tuple(b["tokens"][row][sel].tolist())
                assert toks in originals
                assert b["positions"][row][sel].tolist() == list(range(len(toks)))
                assert np.array_equal(b["loss_mask"][row][sel], originals[toks])
                got.append(toks)
            assert (b["tokens"][row][seg == 0] == 0).all()
    assert Counter(got) == Counter(tuple(formatting.encode_completion(
        TOK, TASK.prompt(p), TASK.solution(p))["tokens"].tolist()) for p in problems)
    assert rows_with_several > 0


def test_value_packing_keeps_targets_on_step_ends():
    records = [{"prompt": TASK.prompt(p), "steps": list(p.steps),
                "targets": [float(i % 2) for i in range(len(p.steps))]}
               for p in TASK.generate(10, seed=4)]

    def encode(r):
        return formatting.encode_steps(TOK, r["prompt"], r["steps"], r["targets"], "\n", True)

    p = pl.make_pipeline(records, encode, "value", 64, 2, pack=True, num_epochs=1,
                         drop_remainder=False, shard_index=0, shard_count=1)
    total = 0
    for b in p.dataset:
        check_batch(b, "value")
        ends = b["tokens"][b["value_mask"] > 0]
        assert set(ends.tolist()) <= {TOK.encode("\n")[0], TOK.eos_id}
        total += int(b["value_mask"].sum())
    assert total == sum(len(r["steps"]) for r in records)


def test_prompt_batches_carry_source_indices():
    problems = TASK.generate(10, seed=5)
    p = pl.make_pipeline(problems, pl.prompt_encoder(TOK), "prompt", 16, 5, num_epochs=1,
                         shard_index=0, shard_count=1)
    indices = []
    for batch, index in p.dataset:
        check_batch(batch, "prompt")
        assert index.dtype == np.int64
        for row, i in zip(batch["prompt_tokens"], index):
            assert TOK.decode(row) == TASK.prompt(problems[i])
        indices += index.tolist()
    assert sorted(indices) == list(range(10))


def test_overflow_is_counted_or_fatal():
    problems = get_task("arithmetic", "hard").generate(8, seed=6)
    with pytest.warns(UserWarning, match="truncated"):
        p = _sft(problems, seq_len=20, num_epochs=1)
        batches = list(p.dataset)
    assert p.stats.truncated == 8
    assert all(b["segment_ids"].all() for b in batches)  # every row full after truncation
    p = _sft(problems, seq_len=20, on_overflow="error")
    with pytest.raises(formatting.SequenceTooLong, match="record .* tokens"):
        next(iter(p.dataset))


def test_bad_arguments():
    with pytest.raises(ValueError, match="pack=True"):
        pl.make_pipeline(TASK.generate(4), pl.sft_encoder(TOK), "preference", 8, 2, pack=True)
    with pytest.raises(ValueError, match="kind must be"):
        pl.make_pipeline(TASK.generate(4), pl.sft_encoder(TOK), "rl", 8, 2)
    with pytest.raises(ValueError, match="empty"):
        pl.problems_source([])


@pytest.mark.parametrize("pack", [False, True])
def test_resume_from_orbax_checkpoint_continues_exactly(tmp_path, pack):
    source = pl.task_source(TASK, 40, seed=9)
    it = iter(_sft(source, pack=pack, seq_len=48).dataset)
    _take(it, 5)  # mid-epoch
    state = it.get_state()
    json.dumps(state)  # JSON-able
    manager = checkpoint.make_manager(tmp_path / "ckpt", async_save=False)
    checkpoint.save_state(manager, 5, {"w": jnp.arange(3.0)}, data_state=state)
    manager.wait_until_finished()
    expected = _take(it, 12)  # crosses the epoch boundary

    restored = checkpoint.restore_state(checkpoint.make_manager(tmp_path / "ckpt"),
                                        {"w": jnp.zeros(3)})
    assert restored is not None
    _, data_state = restored
    fresh = iter(_sft(source, pack=pack, seq_len=48).dataset)
    fresh.set_state(data_state)
    assert _same(expected, _take(fresh, 12))
