"""Token families (icll, mqar) and the token yardsticks (ngram, mqar_lookup)."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import train_preset_and_evaluate
from iclab.algorithms import build_algorithm
from iclab.algorithms.tokens import NGram, RecallLookup, prefix_ngram_log_probs, prefix_recall
from iclab.episode import Episode
from iclab.metrics import score
from iclab.seeding import generator_for
from iclab.tasks import make_task
from iclab.tasks.language import InContextLanguage
from iclab.tasks.recall import MultiQueryRecall

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def draw(task, batch, n_points, seed=0, device="cpu"):
    return task.sample(batch, n_points, generator_for(seed, "train", 0, device=device))


def within(values: torch.Tensor, mean: float, variance: float, n_sigma: float = 5.0) -> bool:
    """Whether the sample mean of ``values`` is within ``n_sigma`` standard errors of ``mean``."""
    values = values.double().flatten()
    return abs(values.mean().item() - mean) < n_sigma * math.sqrt(variance / values.numel())


def uniform_variance(low: int, high: int) -> float:
    """Variance of the discrete uniform distribution on low..high."""
    return ((high - low + 1) ** 2 - 1) / 12


# --- icll --------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_icll_episode_has_token_shapes_and_ranges_on_the_generator_device(device):
    task = make_task("icll")
    episode = draw(task, 6, 100, device=device)
    assert episode.kind == "tokens" and task.n_classes == 20
    assert episode.inputs.shape == episode.targets.shape == (6, 100)
    assert episode.inputs.dtype == episode.targets.dtype == torch.long
    assert episode.meta["valid_next"].shape == (6, 100, 20)
    assert episode.meta["transitions"].shape == (6, 12, 20)
    for tensor in (episode.inputs, episode.targets, episode.loss_mask, *episode.meta.values()):
        assert tensor.device.type == device
    assert episode.inputs.min() >= 0 and episode.inputs.max() < task.n_classes
    assert torch.equal(episode.inputs[:, 1:], episode.targets[:, :-1])


def test_icll_batches_are_functions_of_the_seed():
    task = make_task("icll")
    first, again, other = draw(task, 8, 64), draw(task, 8, 64), draw(task, 8, 64, seed=1)
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, again.targets)
    for key in first.meta:
        assert torch.equal(first.meta[key], again.meta[key])
    assert not torch.equal(first.inputs, other.inputs)


def strings_of(tokens: list[int], delimiter: int, padding: int) -> list[list[int]]:
    """The delimiter-separated strings of a token list, padding dropped."""
    strings, current = [], []
    for token in tokens:
        if token == delimiter:
            strings.append(current)
            current = []
        elif token != padding:
            current.append(token)
    return [*strings, current] if current else strings


def test_every_icll_string_is_accepted_by_its_automaton_and_states_follow_the_walk():
    task = make_task("icll")
    episode = draw(task, 32, 300)
    inputs, states = episode.inputs.tolist(), episode.meta["states"].tolist()
    for b, table in enumerate(episode.meta["transitions"].tolist()):
        for string in strings_of(inputs[b], task.delimiter, task.padding):
            state = 0
            for symbol in string:
                assert table[state][symbol] >= 0, "a sampled symbol has no edge"
                state = table[state][symbol]
        state = 0  # the recorded states: the walk over the whole prompt
        for t, token in enumerate(inputs[b]):
            if token == task.padding:
                assert states[b][t] == -1
                continue
            state = 0 if token == task.delimiter else table[state][token]
            assert states[b][t] == state


def test_icll_valid_next_is_the_set_of_edges_leaving_the_current_state():
    task = make_task("icll")
    episode = draw(task, 16, 200)
    table, states = episode.meta["transitions"], episode.meta["states"]
    valid = episode.meta["valid_next"]
    for b in range(16):
        for t in range(200):
            expected = [False] * task.n_classes
            if states[b, t] >= 0:
                expected = (table[b, states[b, t]] >= 0).tolist()
            assert valid[b, t].tolist() == expected
    assert not valid[..., task.delimiter].any() and not valid[..., task.padding].any()
    # after a delimiter, the continuations are the start state's edges
    after_delimiter = episode.inputs == task.delimiter
    start_edges = (table[:, 0] >= 0)[:, None, :].expand_as(valid)
    assert torch.equal(valid[after_delimiter], start_edges[after_delimiter])


def test_icll_loss_mask_keeps_symbol_targets_and_they_are_valid():
    task = make_task("icll")
    episode = draw(task, 64, 400)
    assert torch.equal(episode.loss_mask, episode.targets < task.options.n_symbols)
    scored_targets = episode.meta["valid_next"].gather(-1, episode.targets[..., None])[..., 0]
    assert scored_targets[episode.loss_mask].all()
    # the true next token scores 1; always predicting the delimiter scores 0
    truth = torch.nn.functional.one_hot(episode.targets, task.n_classes).float()
    assert score(truth, episode, task.target_scale).nan_to_num(1.0).eq(1.0).all()
    delimiter = torch.zeros_like(truth)
    delimiter[..., task.delimiter] = 1.0
    assert score(delimiter, episode, task.target_scale).nan_to_num(0.0).eq(0.0).all()


def test_icll_automata_and_strings_have_the_regbench_distribution():
    task = make_task("icll")
    opts = task.options
    longest = opts.max_strings * (opts.max_string_length + 1)  # no prompt is truncated
    episode = draw(task, 400, longest)
    n_states = episode.meta["n_states"]
    assert within(n_states, 8.0, uniform_variance(4, 12))
    table = episode.meta["transitions"]
    used = torch.arange(opts.max_states) < n_states[:, None]
    out_degree = (table >= 0).sum(-1)[used]
    assert within(out_degree, 2.0, uniform_variance(1, 3))
    assert not (table[used] == torch.nonzero(used)[:, 1:]).any(), "self-loop"
    n_strings, lengths = [], []
    for tokens in episode.inputs.tolist():
        strings = strings_of(tokens, task.delimiter, task.padding)
        n_strings.append(len(strings))
        lengths.extend(len(string) for string in strings)
    assert within(torch.tensor(n_strings), 14.5, uniform_variance(10, 19))
    assert within(torch.tensor(lengths), 25.0, uniform_variance(1, 49))


def test_icll_walks_choose_uniformly_among_a_states_edges():
    task = make_task("icll")
    episode = draw(task, 300, 200)
    table, states, inputs = episode.meta["transitions"], episode.meta["states"], episode.inputs
    previous = torch.cat([torch.zeros_like(states[:, :1]), states[:, :-1]], dim=1)
    rows = table.gather(1, previous.clamp(min=0)[..., None].expand(-1, -1, table.shape[-1]))
    is_symbol = inputs < task.delimiter  # a position where the walk chose an edge
    two_edges = ((rows >= 0).sum(-1) == 2) & is_symbol
    lowest_edge = (rows >= 0).int().argmax(-1)  # the lower of the two edge symbols
    took_lowest = (inputs == lowest_edge)[two_edges]
    assert took_lowest.numel() > 1000
    assert within(took_lowest, 0.5, 0.25)


def test_icll_options_are_validated_with_their_names():
    with pytest.raises(ValueError, match="max_out_degree"):
        make_task("icll", options={"max_out_degree": 4})
    with pytest.raises(ValueError, match="min_strings"):
        make_task("icll", options={"min_strings": 20})
    with pytest.raises(ValueError, match="min_alphabet"):
        make_task("icll", options={"n_symbols": 3})
    with pytest.raises(ValueError, match="n_symbol"):
        make_task("icll", options={"n_symbol": 3})


# --- mqar --------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_mqar_answers_are_the_stored_values_at_exactly_the_masked_positions(device):
    task = make_task("mqar")
    episode = draw(task, 64, 64, device=device)
    assert episode.inputs.device.type == device and episode.loss_mask.device.type == device
    opts, half = task.options, task.options.vocab_size // 2
    episode = episode.to("cpu")
    for b in range(64):
        inputs, targets = episode.inputs[b].tolist(), episode.targets[b].tolist()
        keys, values = inputs[0 : 2 * opts.n_pairs : 2], inputs[1 : 2 * opts.n_pairs : 2]
        assert keys == episode.meta["keys"][b].tolist()
        assert values == episode.meta["values"][b].tolist()
        assert len(set(keys)) == len(keys) and max(keys) < half <= min(values)
        stored = dict(zip(keys, values, strict=True))
        queries = [t for t in range(2 * opts.n_pairs, 64) if inputs[t] < half]
        assert sorted(queries) == sorted(episode.meta["query_positions"][b].tolist())
        assert len(queries) == opts.n_queries == len({inputs[t] for t in queries})
        assert episode.loss_mask[b].nonzero().flatten().tolist() == queries
        for t in queries:
            assert targets[t] == stored[inputs[t]]
    assert torch.equal(episode.inputs[:, 1:], episode.targets[:, :-1])
    assert episode.inputs.max() < opts.vocab_size


def test_mqar_batches_are_functions_of_the_seed():
    task = make_task("mqar")
    first, again, other = draw(task, 8, 64), draw(task, 8, 64), draw(task, 8, 64, seed=1)
    assert torch.equal(first.inputs, again.inputs)
    assert torch.equal(first.loss_mask, again.loss_mask)
    assert not torch.equal(first.inputs, other.inputs)


def test_mqar_query_slots_follow_the_zoology_power_law():
    n_slots, gap_power, prompts = 10, 0.01, 4000
    task = make_task("mqar", options={"n_pairs": 1, "n_queries": 1, "gap_power": gap_power})
    episode = draw(task, prompts, 2 + 2 * n_slots)
    slots = (episode.meta["query_positions"][:, 0] - 2) // 2
    weights = torch.arange(1, n_slots + 1, dtype=torch.float64) ** (gap_power - 1)
    probability = (weights / weights.sum()).tolist()
    for slot in (0, n_slots - 1):
        p = probability[slot]
        assert within((slots == slot).double(), p, p * (1 - p))


def test_mqar_tokens_are_uniform_keys_and_values_of_their_halves():
    task = make_task("mqar", options={"vocab_size": 16, "n_pairs": 2, "n_queries": 1})
    episode = draw(task, 3000, 8)
    keys, values = episode.meta["keys"], episode.meta["values"]
    assert within(keys.double(), 3.5, uniform_variance(0, 7))
    assert within(values.double(), 11.5, uniform_variance(8, 15))
    assert (keys[:, 0] != keys[:, 1]).all() and (values[:, 0] != values[:, 1]).all()


def test_mqar_rejects_prompts_too_short_and_inconsistent_options():
    with pytest.raises(ValueError, match=r"n_points >= 2 \* \(n_pairs \+ n_queries\) = 32"):
        draw(make_task("mqar"), 2, 31)
    with pytest.raises(ValueError, match="n_queries"):
        make_task("mqar", options={"n_queries": 9})
    with pytest.raises(ValueError, match="n_pairs"):
        make_task("mqar", options={"vocab_size": 8, "n_pairs": 5, "n_queries": 1})


# --- ngram -------------------------------------------------------------------------------------


def token_episode(inputs: list[list[int]], last_targets: list[int]) -> Episode:
    """An episode of given tokens whose targets are the inputs shifted (plus a last token)."""
    x = torch.tensor(inputs)
    targets = torch.cat([x[:, 1:], torch.tensor(last_targets)[:, None]], dim=1)
    return Episode(inputs=x, targets=targets, kind="tokens")


def test_bigram_counts_match_a_hand_count():
    # tokens 0 1 0 1 1 0 2 | next 2; vocabulary 3, alpha 1
    episode = token_episode([[0, 1, 0, 1, 1, 0, 2]], [2])
    probs = prefix_ngram_log_probs(episode.inputs, episode.targets, 2, 3, 1.0, True).exp()[0]
    # t = 4 (token 1): earlier 1s at t = 1 -> 0 and t = 3 -> 1: counts (1, 1, 0), total 2
    torch.testing.assert_close(probs[4], torch.tensor([2, 2, 1]) / 5.0)
    # t = 5 (token 0): earlier 0s at t = 0 -> 1 and t = 2 -> 1: counts (0, 2, 0)
    torch.testing.assert_close(probs[5], torch.tensor([1, 3, 1]) / 5.0)
    # t = 6 (token 2): never seen, backs off to unigram of the 6 known successors (2, 3, 1)
    torch.testing.assert_close(probs[6], torch.tensor([3, 4, 2]) / 9.0)
    # t = 0: nothing known at any order, uniform
    torch.testing.assert_close(probs[0], torch.full((3,), 1 / 3))
    no_backoff = prefix_ngram_log_probs(episode.inputs, episode.targets, 2, 3, 1.0, False)
    no_backoff = no_backoff.exp()[0]
    torch.testing.assert_close(no_backoff[6], torch.full((3,), 1 / 3))


def reference_ngram(tokens: list[int], successors: list[int], n, vocab, alpha, backoff):
    """Plain-Python in-context n-gram log-probabilities, one position at a time."""
    rows = []
    for t in range(len(tokens)):
        for order in range(n, 0, -1) if backoff else (n,):
            context = tuple(tokens[t - order + 2 : t + 1]) if order > 1 else ()
            counts = [0] * vocab
            if t >= order - 2:
                for j in range(max(order - 2, 0), t):
                    if (tuple(tokens[j - order + 2 : j + 1]) if order > 1 else ()) == context:
                        counts[successors[j]] += 1
            if sum(counts) > 0:
                break
        total = sum(counts)
        rows.append([math.log((c + alpha) / (total + alpha * vocab)) for c in counts])
    return torch.tensor(rows)


@pytest.mark.parametrize(("n", "backoff"), [(1, True), (2, True), (3, True), (3, False), (4, True)])
def test_ngram_matches_a_plain_python_reference_on_random_sequences(n, backoff):
    generator = torch.Generator().manual_seed(n)
    x = torch.randint(0, 4, (5, 40), generator=generator)
    episode = token_episode(x.tolist(), torch.randint(0, 4, (5,), generator=generator).tolist())
    got = prefix_ngram_log_probs(episode.inputs, episode.targets, n, 4, 0.5, backoff)
    for b in range(5):
        expected = reference_ngram(
            episode.inputs[b].tolist(), episode.targets[b].tolist(), n, 4, 0.5, backoff
        )
        torch.testing.assert_close(got[b], expected.float())


def changed_after(episode: Episode, position: int, vocab: int) -> Episode:
    """The same prompts with every token after ``position`` replaced at random."""
    generator = torch.Generator().manual_seed(123)
    stream = torch.cat([episode.inputs, episode.targets[:, -1:]], dim=1)
    tail = stream[:, position + 1 :]
    stream[:, position + 1 :] = torch.randint(0, vocab, tail.shape, generator=generator)
    return Episode(stream[:, :-1], stream[:, 1:], "tokens", episode.meta, episode.loss_mask)


@pytest.mark.parametrize(
    ("family", "spec"),
    [
        ("icll", "ngram(n=1)"),
        ("icll", "ngram(n=3)"),
        ("mqar", "ngram(n=2)"),
        ("mqar", "mqar_lookup"),
    ],
)
def test_token_learners_are_causal(family, spec):
    task = make_task(family)
    episode = draw(task, 8, 64)
    learner = build_algorithm(spec, task)
    before = learner.predict(episode)
    for position in (0, 20, 40):
        after = learner.predict(changed_after(episode, position, task.n_classes))
        assert torch.equal(before[:, : position + 1], after[:, : position + 1])
        assert not torch.equal(before, after)


def test_bigram_beats_unigram_and_trigram_beats_bigram_on_icll():
    task = make_task("icll")
    episode = draw(task, 128, 256)
    accuracy = {
        n: score(
            build_algorithm(f"ngram(n={n})", task).predict(episode), episode, task.target_scale
        )
        .nanmean()
        .item()
        for n in (1, 2, 3)
    }
    assert accuracy[1] + 0.2 < accuracy[2] < accuracy[3] < 1.0


def test_ngram_options_are_validated_with_their_names():
    icll = make_task("icll")
    with pytest.raises(ValueError, match="n: Input should be greater than or equal to 1"):
        build_algorithm("ngram(n=0)", icll)
    with pytest.raises(ValueError, match="alpha"):
        build_algorithm("ngram(alpha=0)", icll)
    with pytest.raises(ValueError, match="backoff"):
        build_algorithm("ngram(backoff=2)", icll)
    with pytest.raises(ValueError, match="vocab_size: unknown option"):
        build_algorithm("ngram(vocab_size=3)", icll)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        NGram(make_task("mqar", options={"vocab_size": 4, "n_pairs": 1, "n_queries": 1})).predict(
            draw(icll, 2, 10)
        )


# --- mqar_lookup and pairings ------------------------------------------------------------------


def test_mqar_lookup_and_bigram_recall_every_answer():
    task = make_task("mqar", options={"vocab_size": 64, "n_pairs": 12, "n_queries": 10})
    episode = draw(task, 256, 60)
    for spec in ("mqar_lookup", "ngram(n=2)"):
        accuracy = score(build_algorithm(spec, task).predict(episode), episode, task.target_scale)
        assert accuracy[episode.loss_mask].eq(1.0).all(), spec


def test_mqar_lookup_recalls_the_most_recent_successor():
    episode = token_episode([[5, 1, 5, 2, 6, 5]], [3])
    log_probs = prefix_recall(episode.inputs, episode.targets, 7)[0]
    assert log_probs.argmax(-1).tolist()[2:] == [1, 0, 0, 2]  # t = 5: 5 was last followed by 2
    impossible = torch.finfo(torch.float32).min
    assert log_probs[5].tolist() == [impossible, impossible, 0.0] + [impossible] * 4
    torch.testing.assert_close(log_probs[0].exp(), torch.full((7,), 1 / 7))  # never seen


def test_wrong_pairings_give_a_clear_error():
    icll, mqar = make_task("icll"), make_task("mqar")
    with pytest.raises(ValueError, match="'mqar_lookup' applies to mqar, not to task 'icll'"):
        build_algorithm("mqar_lookup", icll)
    with pytest.raises(ValueError, match="'least_squares' applies to all regression tasks"):
        build_algorithm("least_squares", mqar)
    with pytest.raises(ValueError, match="'mqar_lookup' applies to mqar, not to task 'icll'"):
        RecallLookup(icll)
    with pytest.raises(ValueError, match="'ngram' applies to all tokens tasks"):
        NGram(make_task("linear_regression"))


def test_yardsticks_apply_to_their_families():
    for family in (InContextLanguage, MultiQueryRecall):
        task = make_task(family.name)
        episode = draw(task, 4, 64)
        for spec in family.yardsticks:
            prediction = build_algorithm(spec, task).predict(episode)
            assert prediction.shape == (4, 64, task.n_classes)


# --- trained transformers (slow) ---------------------------------------------------------------


def pooled_accuracy(points: dict) -> float:
    """Accuracy over every scored position (each k weighted by the prompts it scores)."""
    scored = sum(point.n_prompts for point in points.values())
    return sum(point.mean * point.n_prompts for point in points.values()) / scored


@pytest.mark.slow
def test_transformer_learns_regular_languages_in_context_better_than_unigram(tmp_path):
    # Measured on a shared 2-core CPU, one thread, 167 s: accuracy over all scored positions of
    # 512 prompts: model 0.559, ngram(n=1) 0.426, ngram(n=2) 0.733, ngram(n=3) 0.799. In 600
    # steps the model goes past in-context unigram statistics, not yet to bigram ones.
    curves = train_preset_and_evaluate("icll", tmp_path / "icll")
    model, unigram = pooled_accuracy(curves["model"]), pooled_accuracy(curves["ngram(n=1)"])
    assert model > unigram + 0.08


@pytest.mark.slow
def test_transformer_learns_multi_query_recall(tmp_path):
    # Measured on a shared 2-core CPU, one thread, 141 s (vocabulary 32, 4 pairs, 4 queries):
    # accuracy at the queries of 512 prompts: model 0.9995, mqar_lookup and ngram(n=2) 1.0,
    # ngram(n=1) 0.024 (chance among the 16 values: 0.0625).
    curves = train_preset_and_evaluate("mqar", tmp_path / "mqar")
    model, unigram = pooled_accuracy(curves["model"]), pooled_accuracy(curves["ngram(n=1)"])
    assert model > 0.95 and unigram < 0.1


def test_mqar_lookup_takes_no_options():
    with pytest.raises(ValueError, match=r"vocab_size: unknown option \(it takes no options\)"):
        build_algorithm("mqar_lookup(vocab_size=8)", make_task("mqar"))
