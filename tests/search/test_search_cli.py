"""`reasonjax search` end to end on a tiny random model, and the driver's bookkeeping."""

import json

import jax
import numpy as np
import pytest

from reasonjax.checkpoint import save_model
from reasonjax.cli import build_parser, main
from reasonjax.data.task import get_task
import argparse

from reasonjax.driver import Env, run
from reasonjax.search.cli import method_from_args
from reasonjax.data.answers import normalize
from reasonjax.errors import ConfigError
from reasonjax.search.sampler import (CyclicReflex, SamplingConfig, SearchError, sample,
                                      stop_tokens_for)
from reasonjax.search.voting import VotingConfig
from reasonjax.search.scoring import StepScorer

from search_helpers import CFG, TOK

STEPS, STEP_TOKENS = 3, 8
COMMON = ["--max-steps", str(STEPS), "--step-tokens", str(STEP_TOKENS), "--no-progress"]


@pytest.fixture(scope="module")
def model_dir(params, tmp_path_factory):
    root = tmp_path_factory.mktemp("search_cli")
    TOK.save(root / "tok")
    return save_model(root / "model", CFG, params, tokenizer_dir=root / "tok")


def search(model_dir, out, *args):
    assert main(["search", str(model_dir), *args, *COMMON, "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    summary = json.loads(out.with_name(out.stem + ".summary.json").read_text())
    return records, summary


@pytest.fixture(scope="module")
def greedy_task_run(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("greedy") / "greedy.jsonl"
    return search(model_dir, out, "--task", "arithmetic", "--difficulty", "easy", "--count",
                  "3", "--method", "greedy", "--batch-size", "2")


def test_cli_greedy_equals_the_sampler_and_counts_compute(params, greedy_task_run):
    records, summary = greedy_task_run
    task = get_task("arithmetic", "easy")
    problems = task.generate(3, seed=0)
    assert [r["question"] for r in records] == [p.question for p in problems]
    stop = stop_tokens_for(TOK, CFG.vocab_size, delimiter="\n")
    generated = 0
    for r, p in zip(records, problems):
        # Each prompt alone, unpadded: batching and the padded last batch change nothing.
        ids = np.asarray([TOK.encode(task.prompt(p), add_bos=True)], np.int32)
        out = sample(CFG, params, ids, np.ones_like(ids), jax.random.key(0),
                     max_new_tokens=STEPS * STEP_TOKENS, sampling=SamplingConfig(0.0),
                     stop=stop)
        length = int(out.lengths[0, 0])
        assert r["completion"] == TOK.decode(np.asarray(out.tokens[0, 0, :length]).tolist())
        assert r["correct"] == task.verify(p, r["completion"])
        assert r["answer"] == task.extract_answer(r["completion"])
        assert len(r["candidates"]) == 1 and r["reference"] == p.answer
        generated += length
    assert summary["tokens_generated"] == pytest.approx(generated)
    # Padding rows' share is not counted: the prefill total is the real prompts' tokens.
    assert summary["tokens_prefilled"] == pytest.approx(
        sum(len(task.prompt(p)) + 1 for p in problems))
    assert summary["problems"] == 3
    assert summary["accuracy"] == pytest.approx(np.mean([r["correct"] for r in records]))


def test_cli_local_file_accuracy_counts_correct_answers(model_dir, params, tmp_path):
    """A GSM8K-style file whose first reference is the number the model answers and whose
    second is not: accuracy must be exactly 1/2, and a vote over identical greedy-like
    samples agrees. The random model writes no answer mark, so its last number counts
    only with --answer-fallback."""
    from reasonjax.data.answers import extract_answer

    gsm8k = get_task("gsm8k")
    questions = ["12+7*3-5", "3*4+2"]
    probe = [gsm8k.from_instance(q, "0") for q in questions]
    first = run(Env(gsm8k, TOK, CFG), params, probe, method_args("greedy"),
                jax.random.key(0))
    said = [extract_answer(r.completion) for r in first]
    assert said[0] is not None, "the random model wrote no number; pick other questions"
    rows = [{"question": questions[0], "answer": said[0]},
            {"question": questions[1], "answer": str(_other(said[1]))}]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, _ = search(model_dir, tmp_path / "strict.jsonl", "--local", str(data),
                        "--format", "gsm8k", "--method", "greedy")
    assert [r["correct"] for r in records] == [False, False]
    records, summary = search(model_dir, tmp_path / "g.jsonl", "--local", str(data),
                              "--format", "gsm8k", "--method", "greedy", "--answer-fallback")
    assert [r["correct"] for r in records] == [True, False]
    assert summary["accuracy"] == 0.5 and summary["data"] == str(data)
    # Majority vote over n=2 samples at temperature 0: both equal greedy, so the same votes.
    records, summary = search(model_dir, tmp_path / "m.jsonl", "--local", str(data),
                              "--format", "gsm8k", "--method", "majority", "--n", "2",
                              "--temperature", "0", "--answer-fallback")
    assert [r["correct"] for r in records] == [True, False]
    assert all(len(r["candidates"]) == 2 for r in records)
    assert records[0]["score"] == 2.0  # two votes for the winning answer


def method_args(method, *flags, tokenizer=None):
    """The config ``reasonjax search --method METHOD FLAGS`` runs (the CLI's defaults)."""
    args = build_parser().parse_args(["search", "ckpt", "--method", method,
                                      "--max-steps", str(STEPS), "--step-tokens",
                                      str(STEP_TOKENS), *flags])
    return method_from_args(args, tokenizer)


def _other(answer):
    try:
        return int(float(answer)) + 1
    except (TypeError, ValueError):
        return 7


@pytest.mark.parametrize("method", ["beam", "mcts"])
def test_cli_step_methods_write_valid_records(model_dir, tmp_path, method):
    records, summary = search(model_dir, tmp_path / "s.jsonl", "--task", "arithmetic",
                              "--difficulty", "easy", "--count", "2", "--method", method,
                              "--n", "4", "--beam-width", "2", "--num-actions", "2",
                              "--simulations", "3", "--batch-size", "2")
    task = get_task("arithmetic", "easy")
    assert len(records) == 2
    for r, p in zip(records, task.generate(2, seed=0)):
        assert r["method"] == method and r["question"] == p.question
        assert r["completion"] in [c["completion"] for c in r["candidates"]]
        for c in r["candidates"]:
            assert c["correct"] == task.verify(p, c["completion"])
            # Each candidate has at most max_steps steps of at most step_tokens tokens.
            assert len(c["completion"]) <= STEPS * STEP_TOKENS
        assert r["compute"]["tokens_generated"] > 0
    assert summary["forward_passes"] > 0


def test_bad_inputs_fail_clearly(model_dir, params, tmp_path, capsys):
    with pytest.raises(SearchError, match="unknown method 'bogus'; choose one of greedy"):
        method_from_args(argparse.Namespace(method="bogus"))
    with pytest.raises(SearchError, match="n must be a positive integer, got 0"):
        method_args("best_of_n", "--n", "0")
    with pytest.raises(SearchError, match="beam_width 3 does not divide n 4"):
        method_args("beam", "--n", "4", "--beam-width", "3")
    with pytest.raises(SearchError, match="prm_vote"):
        method_args("prm_vote", "--transform", "tanh")
    # Prompt + steps longer than the model's context (max_seq_len 96).
    long_task = get_task("arithmetic", n_ops=20, max_operand=999)
    with pytest.raises(SearchError, match="exceeds the model's max_seq_len 96"):
        run(Env(long_task, TOK, CFG), params, long_task.generate(1), method_args("greedy"),
            jax.random.key(0))
    # On the command line: one line naming the problem, exit status 2, no traceback.
    assert main(["search", str(model_dir), "--task", "arithmetic", "--method", "beam",
                 "--n", "4", "--beam-width", "3", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "beam_width 3 does not divide n 4" in capsys.readouterr().err
    assert main(["search", str(model_dir), "--task", "arithmetic", "--local", "f.jsonl",
                 "--method", "greedy"]) == 2
    assert "exactly one of --task NAME or --local FILE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["search", str(model_dir), "--task", "arithmetic", "--method", "bogus"])


def test_vote_and_reflection_flags_build_the_configs():
    vote = method_args("perplexity_vote", "--n", "6", "--complexity-top-k", "3")
    assert isinstance(vote, VotingConfig)
    assert (vote.weighting, vote.complexity_top_k, vote.n) == ("perplexity", 3, 6)
    assert method_args("majority").complexity_top_k is None
    plus, star = TOK.encode("+")[0], TOK.encode("*")[0]
    greedy = method_args("greedy", "--reflection-amplitude", "2.5", "--reflection-period",
                         "40", "--reflection-ids", "7", str(plus),
                         "--reflection-tokens", "+", "*", tokenizer=TOK)
    assert greedy.sampling.reflection == CyclicReflex(token_ids=(7, plus, star),
                                                      amplitude=2.5, period=40.0)
    assert method_args("beam", "--n", "4").sampling.reflection == CyclicReflex()
    with pytest.raises(SearchError, match="--complexity-top-k applies to the vote methods"):
        method_args("beam", "--n", "4", "--complexity-top-k", "2")
    with pytest.raises(ConfigError, match=r"complexity_top_k: must be <= n \(4\)"):
        method_args("majority", "--n", "4", "--complexity-top-k", "5")
    with pytest.raises(SearchError, match="--reflection-tokens needs the checkpoint's tokenizer"):
        method_args("greedy", "--reflection-amplitude", "1", "--reflection-tokens", "+")
    with pytest.raises(ConfigError, match="'ab' encodes to 2 tokens"):
        method_args("greedy", "--reflection-amplitude", "1", "--reflection-tokens", "ab",
                    tokenizer=TOK)
    with pytest.raises(ConfigError, match="token_ids: amplitude > 0 needs"):
        method_args("greedy", "--reflection-amplitude", "1")


def test_cli_perplexity_vote_among_the_most_complex(model_dir, tmp_path):
    """perplexity_vote --complexity-top-k 2 with a CyclicReflex schedule given as text: each
    record's answer is the hand-computed vote, exp(mean log-prob) weights over the two
    candidates with the most steps (the earlier one on ties). The random model's last
    number is its answer (--answer-fallback), so the candidates disagree."""
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "0"}) + "\n"
                            for q in ["12+7*3-5", "3*4+2"]))
    records, summary = search(model_dir, tmp_path / "pv.jsonl", "--local", str(data),
                              "--format", "gsm8k", "--answer-fallback", "--method",
                              "perplexity_vote", "--n", "4", "--complexity-top-k", "2",
                              "--reflection-tokens", "+", "--reflection-amplitude", "3",
                              "--reflection-period", "8", "--batch-size", "2")
    reflection = summary["made_from"]["config"]["sampling"]["reflection"]
    assert reflection == {"token_ids": [TOK.encode("+")[0]], "amplitude": 3.0, "period": 8.0}
    assert summary["made_from"]["config"]["complexity_top_k"] == 2
    assert any(c["answer"] is not None for r in records for c in r["candidates"])
    for r in records:
        cands = r["candidates"]
        assert len(cands) == 4 and all(1 <= c["steps"] <= STEPS for c in cands)
        kept = sorted(range(4), key=lambda i: (-cands[i]["steps"], i))[:2]
        totals = {}
        for i in sorted(kept):
            if cands[i]["answer"] is not None:
                key = normalize(cands[i]["answer"])
                weight = np.exp(cands[i]["logprob"] / max(cands[i]["tokens"], 1))
                totals[key] = totals.get(key, 0.0) + weight
        if not totals:
            assert r["answer"] is None
            continue
        best = max(totals.values())
        first = next(i for i in sorted(kept) if cands[i]["answer"] is not None
                     and totals[normalize(cands[i]["answer"])] == pytest.approx(best))
        assert r["answer"] == cands[first]["answer"]
        assert r["score"] == pytest.approx(best, rel=1e-5)


@pytest.fixture(scope="module")
def scorer_dir(model_dir, tmp_path_factory):
    """A separate scorer model (smaller than the policy, same tokenizer, random value
    head) saved as a checkpoint."""
    from reasonjax.parallel import init_params

    root = tmp_path_factory.mktemp("scorer")
    prm_cfg = CFG.replace(d_model=16, n_heads=2, n_kv_heads=1, d_ff=32)
    p = init_params(prm_cfg, jax.random.key(5))
    kernel = jax.random.normal(jax.random.key(6), p["value_head"]["kernel"].shape)
    TOK.save(root / "tok")
    return save_model(root / "prm", prm_cfg,
                      {**p, "value_head": {**p["value_head"], "kernel": kernel}},
                      tokenizer_dir=root / "tok")


def test_cli_mcts_mixes_the_scorer_model_into_node_values(model_dir, scorer_dir, tmp_path):
    """--method mcts --scorer CKPT: the scorer's value head (--transform) joins the node
    values with --scorer-weight, next to the policy's value head at --value-weight; it
    reads every node's prompt + path."""
    records, summary = search(model_dir, tmp_path / "m.jsonl", "--task", "arithmetic",
                              "--difficulty", "easy", "--count", "2", "--method", "mcts",
                              "--num-actions", "2", "--simulations", "2", "--batch-size", "2",
                              "--scorer", str(scorer_dir), "--transform", "tanh",
                              "--value-weight", "0.5", "--scorer-weight", "0.25")
    config = summary["made_from"]["config"]
    assert (config["value_weight"], config["scorer_weight"]) == (0.5, 0.25)
    assert config["scorer"]["kind"] == "value" and config["scorer"]["transform"] == "tanh"
    assert summary["made_from"]["scorer"] is not None
    # the scorer re-reads prompt + path at every expansion; the policy its prompts once
    assert summary["tokens_scored"] > summary["tokens_prefilled"] > 0 and len(records) == 2


def test_cli_score_template_builds_a_self_evaluation_scorer():
    cfg = method_args("mcts", "--score-template", "=?", "--good-tokens", "+",
                      "--bad-tokens", "-", "--scorer-weight", "0.3", tokenizer=TOK)
    assert cfg.scorer == StepScorer(kind="token_prob", template=tuple(TOK.encode("=?")),
                                    good_ids=tuple(TOK.encode("+")),
                                    bad_ids=tuple(TOK.encode("-")))
    # The scorer replaces the value head unless --value-weight keeps it.
    assert (cfg.value_weight, cfg.scorer_weight) == (0.0, 0.3)
    assert method_args("mcts", "--scorer", "prm", "--value-weight", "0.5").value_weight == 0.5
    plain = method_args("mcts")
    assert (plain.scorer, plain.value_weight, plain.scorer_weight) == (None, 1.0, 1.0)
    beam = method_args("beam", "--n", "4", "--score-template", "=?", "--good-tokens", "+",
                       tokenizer=TOK)
    assert beam.scorer.kind == "token_prob" and beam.scorer.bad_ids == ()


@pytest.mark.parametrize("flags, match", [
    (["greedy", "--scorer", "prm"], "--scorer: greedy would ignore the step scorer"),
    (["sample", "--scorer", "prm"], "--scorer: sample would ignore"),
    (["majority", "--scorer", "prm"], "--scorer: majority would ignore"),
    (["perplexity_vote", "--scorer", "prm"], "--scorer: perplexity_vote would ignore"),
    (["best_of_n", "--scorer", "prm", "--select-by", "logprob"],
     "best-of-N picks by logprob"),
    (["greedy", "--score-template", "=?", "--good-tokens", "+"],
     "--score-template: greedy would ignore"),
    (["beam", "--scorer-weight", "0.5"], "--scorer-weight applies to --method mcts, not beam"),
    (["best_of_n", "--value-weight", "0.5"], "--value-weight applies to --method mcts"),
    (["mcts", "--scorer-weight", "0.5"], "--scorer-weight needs a scorer"),
    (["mcts", "--good-tokens", "+"], "--good-tokens applies with --score-template"),
    (["mcts", "--score-template", "=?"], "--score-template needs --good-tokens"),
    (["mcts", "--scorer", "prm", "--aggregate", "min"], "--aggregate min applies to the step"),
])
def test_scorer_flags_a_method_cannot_use_are_refused(flags, match):
    with pytest.raises(SearchError, match=match):
        method_args(*flags, tokenizer=TOK)


def test_scorer_refusals_are_one_line_errors(model_dir, params, scorer_dir, tmp_path, capsys):
    assert main(["search", str(model_dir), "--task", "arithmetic", "--method", "greedy",
                 "--scorer", str(scorer_dir), "--out", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--scorer: greedy would ignore the step scorer" in err and "\n" not in err
    # The library refuses too: the driver never drops a scorer silently.
    task = get_task("arithmetic", "easy")
    with pytest.raises(SearchError, match="a separate scorer model is given but plain "
                                          "sampling"):
        run(Env(task, TOK, CFG), params, task.generate(1), method_args("greedy"),
            jax.random.key(0), scorer=(CFG, params))


def test_help_lists_lookahead_and_pruning(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag in ("--lookahead K", "--prune-after S", "--prune-keep F"):
        assert flag in out


def test_lookahead_and_pruning_flags_build_the_configs():
    for method in ("beam", "dvts"):
        cfg = method_args(method, "--n", "4", "--lookahead", "2")
        assert cfg.lookahead == 2
    assert method_args("beam", "--n", "4").lookahead == 0
    template = ["--score-template", "=?", "--good-tokens", "+", "--bad-tokens", "-"]
    for method in ("best_of_n", "majority", "prm_vote", "perplexity_vote"):
        cfg = method_args(method, "--prune-after", "1", "--prune-keep", "0.25", *template,
                          tokenizer=TOK)
        assert (cfg.prune_after, cfg.prune_keep, cfg.scorer.kind) == (1, 0.25, "token_prob")
    assert method_args("majority", "--prune-after", "2", "--scorer", "prm").prune_keep == 0.5
    plain = method_args("majority")
    assert (plain.prune_after, plain.prune_keep) == (None, 0.5)


@pytest.mark.parametrize("flags, error, match", [
    (["best_of_n", "--lookahead", "1"], SearchError,
     "--lookahead applies to --method beam / dvts, not best_of_n"),
    (["beam", "--n", "4", "--prune-after", "1", "--scorer", "prm"], SearchError,
     "--prune-after applies to best_of_n, majority, prm_vote, perplexity_vote, not beam"),
    (["sample", "--prune-keep", "0.5"], SearchError, "--prune-keep applies to best_of_n"),
    (["majority", "--prune-keep", "0.5"], SearchError,
     "--prune-keep applies with --prune-after"),
    (["majority", "--prune-after", "1"], SearchError,
     "--prune-after ranks the samples by a step scorer; give --score-template"),
    (["majority", "--prune-after", str(STEPS), "--scorer", "prm"], ConfigError,
     rf"prune_after: must be < max_steps \({STEPS}\)"),
    (["best_of_n", "--prune-after", "1", "--prune-keep", "1.5", "--scorer", "prm"],
     ConfigError, r"prune_keep: must be in \(0, 1\]"),
    (["dvts", "--n", "4", "--lookahead", str(STEPS)], SearchError,
     rf"lookahead must be an integer in \[0, max_steps={STEPS}\)"),
])
def test_bad_lookahead_and_pruning_flags_are_refused(flags, error, match):
    with pytest.raises(error, match=match):
        method_args(*flags, tokenizer=TOK)


def test_cli_pruned_majority_spends_fewer_tokens(model_dir, tmp_path, capsys):
    """majority with --prune-after 1 --prune-keep 0.5 against the same run unpruned
    (--prune-keep 1 keeps every sample: the plain run, as test_best_of_n_voting checks;
    without pruning, majority would refuse the template): fewer tokens generated, every
    record answered from its surviving candidates; a bad combination is one line."""
    common = ["--task", "arithmetic", "--difficulty", "easy", "--count", "2", "--method",
              "majority", "--n", "4", "--batch-size", "2", "--score-template", "=?",
              "--good-tokens", "+", "--bad-tokens", "-"]
    full, full_summary = search(model_dir, tmp_path / "full.jsonl", *common,
                                "--prune-after", "1", "--prune-keep", "1")
    pruned, summary = search(model_dir, tmp_path / "pruned.jsonl", *common,
                             "--prune-after", "1", "--prune-keep", "0.5")
    assert summary["made_from"]["config"]["prune_after"] == 1
    assert summary["tokens_generated"] < full_summary["tokens_generated"]
    assert summary["tokens_scored"] <= full_summary["tokens_scored"]
    for r, f in zip(pruned, full):
        assert r["question"] == f["question"] and 2 <= len(r["candidates"]) <= 4
        assert r["completion"] in [c["completion"] for c in r["candidates"]]
    capsys.readouterr()
    assert main(["search", str(model_dir), "--task", "arithmetic", "--method", "beam",
                 "--prune-after", "1", "--out", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--prune-after applies to best_of_n" in err and "\n" not in err


def test_cli_lookahead_beam_writes_valid_records(model_dir, tmp_path):
    records, summary = search(model_dir, tmp_path / "la.jsonl", "--task", "arithmetic",
                              "--difficulty", "easy", "--count", "2", "--method", "dvts",
                              "--n", "4", "--beam-width", "2", "--lookahead", "1",
                              "--batch-size", "2")
    assert summary["made_from"]["config"]["lookahead"] == 1
    for r in records:
        assert r["completion"] in [c["completion"] for c in r["candidates"]]
        assert all(len(c["completion"]) <= STEPS * STEP_TOKENS for c in r["candidates"])
    assert summary["tokens_generated"] > 0 and len(records) == 2


def test_cli_refine_reranks_draft_and_refinements(model_dir, scorer_dir, tmp_path):
    """--method refine (GLoRe): three candidates per problem (draft, global, local), each
    scored by the scorer's last step, the best one answering; the refiner here is the
    policy's own checkpoint."""
    records, summary = search(model_dir, tmp_path / "r.jsonl", "--task", "arithmetic",
                              "--difficulty", "easy", "--count", "3", "--method", "refine",
                              "--refiner", str(model_dir), "--scorer", str(scorer_dir),
                              "--batch-size", "2")
    assert summary["made_from"]["config"]["mode"] == "both"
    assert summary["made_from"]["refiner"] is not None and len(records) == 3
    for r in records:
        scores = [c["score"] for c in r["candidates"]]
        assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
        assert r["score"] == max(scores)
        assert r["completion"] == r["candidates"][scores.index(max(scores))]["completion"]
    assert summary["tokens_scored"] > 0 and summary["forward_passes"] > 0


@pytest.mark.parametrize("flags, match", [
    (["greedy", "--refiner", "r"], "--refiner applies to --method refine, not greedy"),
    (["beam", "--refine-mode", "local"], "--refine-mode applies to --method refine"),
    (["refine"], "--method refine needs --refiner CKPT"),
    (["refine", "--refiner", "r", "--score-template", "=?", "--good-tokens", "+"],
     "--score-template does not apply to --method refine"),
    (["refine", "--refiner", "r", "--refine-mode", "global", "--scorer", "prm"],
     "--refine-mode global flags no step"),
])
def test_refine_flags_are_checked(flags, match):
    with pytest.raises(SearchError, match=match):
        method_args(*flags, tokenizer=TOK)


def test_help_lists_refine(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "refine" in out and "--refiner CKPT" in out and "--refine-mode" in out


def test_refiner_with_another_vocabulary_is_refused(model_dir, tmp_path, capsys):
    from reasonjax.parallel import init_params

    other = CFG.replace(vocab_size=CFG.vocab_size + 8)
    refiner = save_model(tmp_path / "refiner", other, init_params(other, jax.random.key(3)))
    assert main(["search", str(model_dir), "--task", "arithmetic", "--count", "1",
                 "--method", "refine", "--refiner", str(refiner), *COMMON,
                 "--out", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"vocabulary of {other.vocab_size} ids" in err and "\n" not in err
    assert not (tmp_path / "x.jsonl").exists()


def test_default_budget_fits_the_model(model_dir, tmp_path, capsys):
    """Without --max-steps the default 8 steps shrink to what the model's max_seq_len
    (96) holds after the longest prompt, with a note; a budget given on the command line
    is not changed, and fails with the search's own error."""
    import re

    out = tmp_path / "fit.jsonl"
    flags = ["--task", "arithmetic", "--difficulty", "easy", "--count", "2", "--method",
             "majority", "--n", "2", "--step-tokens", "16", "--no-progress"]
    assert main(["search", str(model_dir), *flags, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    prompt = int(re.search(r"the longest prompt \((\d+) tokens\)", err).group(1))
    steps = (96 - prompt) // 16
    assert 1 <= steps < 8
    assert f"--max-steps {steps} (not 8 x 16)" in err and f"leaves {96 - prompt} of" in err
    summary = json.loads(out.with_name("fit.summary.json").read_text())
    assert summary["made_from"]["config"]["max_steps"] == steps
    assert len(out.read_text().splitlines()) == 2
    assert main(["search", str(model_dir), *flags, "--max-steps", "8",
                 "--out", str(tmp_path / "given.jsonl")]) == 2
    assert "max_steps x step_tokens (8 x 16)" in capsys.readouterr().err
