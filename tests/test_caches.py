"""KV-cache policies: the full cache is today's streaming, a budget that holds the whole prompt
changes nothing, caches never exceed their budgets, and each policy keeps what its paper says
on a case planted by hand."""

from __future__ import annotations

import math
import typing

import pytest
import torch

from conftest import tiny_config
from iclab.errors import ConfigError
from iclab.models.backbone import Backbone, compress_cache
from iclab.models.caches import POLICIES, KVCache, build_policy
from iclab.models.caches.compression import fake_quantize
from iclab.models.mixers import resolve_mixer
from iclab.models.mixers.attention import CausalSelfAttention

SCHEMES = ["learned", "rotary", "alibi", "none"]
# every position scheme, and the short convolution whose window rides along with the cache
LAYERS = [f"positions={scheme}" for scheme in SCHEMES] + [
    "short_conv=2",
    "positions=rotary, short_conv=3",
]
LENGTH = 24


def backbone(options: str = "positions=rotary", layers: int = 3, width: int = 32, heads: int = 4):
    """Softmax layers with ``options``, their weights drawn from seed 0."""
    torch.manual_seed(0)
    specs = [resolve_mixer(f"softmax({options})")] * layers
    return Backbone(specs, width, heads, n_positions=64).eval()


def tokens(batch: int = 3, length: int = LENGTH, width: int = 32) -> torch.Tensor:
    return torch.randn(batch, length, width, generator=torch.Generator().manual_seed(1))


def takes_budget(name: str) -> bool:
    return "budget" in POLICIES.get(name).Options.model_fields


def whole_prompt(name: str, length: int, unit: str = "token") -> str:
    """A spec of the policy whose budget holds every token of a prompt in every layer."""
    if not takes_budget(name):
        return name
    budget = 2 * length if name == "pyramidkv" else length
    return f"{name}(budget={budget}, unit={unit})"


def units(name: str) -> tuple[str, ...]:
    """The eviction units a policy takes."""
    field = POLICIES.get(name).Options.model_fields.get("unit")
    return ("token",) if field is None else typing.get_args(field.annotation)


@pytest.mark.parametrize("options", LAYERS)
def test_full_cache_is_streaming(options):
    model, x = backbone(options), tokens()
    with torch.no_grad():
        streamed = model.stream(x)
        full = model.stream(x, policy=build_policy("full"), group=2)
    assert (full - streamed).abs().max() < 1e-5
    assert (full - model(x)).abs().max() < 1e-5


@pytest.mark.parametrize("name", [name for name, _ in POLICIES if name != "quantize"])
@pytest.mark.parametrize("options", ["positions=rotary", "positions=alibi", "short_conv=2"])
def test_a_budget_holding_the_prompt_changes_nothing(name, options):
    model, x = backbone(options), tokens()
    with torch.no_grad():
        full = model.stream(x, policy=build_policy("full"))
        for unit in units(name):
            spec = whole_prompt(name, LENGTH, unit)
            out = model.stream(x, policy=build_policy(spec), group=2)
            assert (out - full).abs().max() < 1e-5, spec


@pytest.mark.parametrize("name", [name for name, _ in POLICIES if takes_budget(name)])
@pytest.mark.parametrize("mode", ["streaming", "once"])
def test_caches_never_exceed_their_budget(name, mode):
    budget = 6
    policy = build_policy(f"{name}(budget={budget}, mode={mode})")
    model, x = backbone("positions=alibi"), tokens()
    states = model.initial_states(3, x.device, x.dtype, policy, group=2)
    with torch.no_grad():
        for t in range(LENGTH):
            _, states = model.step(x[:, t], states, t)
            held = [compress_cache(state) for state in states] if mode == "once" else states
            for layer, cache in enumerate(held):
                assert cache.keys.shape[2] == cache.values.shape[2] == cache.positions.shape[2]
                assert cache.size <= cache.budget, (layer, t)
                assert cache.size == min(t + 1, cache.budget) or name == "merge"
                assert policy.floats(cache) <= 2 * 32 * cache.budget


def test_a_short_convolution_keeps_its_window_whole_and_counts_it():
    """The convolution's last inputs are no cache entries: eviction leaves them as the full
    stream has them, and the cache's floats include them."""
    model, x = backbone("short_conv=3", layers=1), tokens()
    policy = build_policy("window(budget=4)")
    evicting = model.initial_states(3, x.device, x.dtype, policy, group=2)
    plain = model.initial_states(3, x.device, x.dtype)
    with torch.no_grad():
        for t in range(LENGTH):
            _, evicting = model.step(x[:, t], evicting, t)
            _, plain = model.step(x[:, t], plain, t)
    cache, (_, _, _, window) = evicting[0], plain[0]
    assert cache.size == 4
    assert torch.equal(cache.window, window)
    assert policy.floats(cache) == 2 * 32 * 4 + 32 * 2  # keys and values, + E·(k − 1)


def planted(keys: torch.Tensor, budget: int, length: int | None = None, group: int = 1) -> KVCache:
    """A one-sequence cache of the given keys (H, n, D), values equal to keys, positions 0..n-1."""
    heads, n, _ = keys.shape
    cache = KVCache.empty(1, heads, keys.shape[-1], keys.device, keys.dtype, budget, group)
    positions = torch.arange(n).expand(1, heads, n)
    return KVCache(
        keys[None],
        keys[None],
        positions,
        torch.ones(1, heads, n),
        torch.zeros(1, heads, n),
        cache.queries,
        length=length or n,
        budget=budget,
        group=group,
    )


def kept_positions(cache: KVCache) -> list[list[int]]:
    return cache.positions[0].tolist()


def test_window_and_sink_window_keep_the_first_and_last_tokens():
    cache = planted(torch.randn(2, 10, 4), budget=5)
    assert kept_positions(build_policy("window(budget=5)").compress(cache)) == [[5, 6, 7, 8, 9]] * 2
    sink = build_policy("sink_window(budget=5, sinks=2)").compress(cache)
    assert kept_positions(sink) == [[0, 1, 7, 8, 9]] * 2


def test_h2o_keeps_the_token_that_received_the_most_attention():
    policy = build_policy("h2o(budget=4, recent=0.5)")
    cache = planted(torch.randn(2, 8, 4), budget=4)
    for weights in ([0, 0, 0.9, 0, 0, 0, 0, 0.1], [0.2, 0, 0.5, 0, 0.1, 0.1, 0, 0.1]):
        cache = policy.observe(cache, torch.tensor(weights).expand(1, 2, 8))
    # two heavy hitters (2 with 1.4, then 0 with 0.2) and the two most recent tokens
    assert kept_positions(policy.compress(cache)) == [[0, 2, 6, 7]] * 2


def test_tova_keeps_what_the_newest_query_attends_to_averaged_over_heads():
    policy = build_policy("tova(budget=2)")
    cache = planted(torch.randn(2, 5, 4), budget=2)
    weights = torch.tensor([[0.5, 0.1, 0.1, 0.2, 0.1], [0.0, 0.2, 0.1, 0.6, 0.1]])[None]
    assert kept_positions(policy.compress(policy.observe(cache, weights))) == [[0, 3]] * 2


def test_snapkv_keeps_what_the_observation_window_attends_to():
    policy = build_policy("snapkv(budget=3, window=2, kernel=1)")
    keys = torch.zeros(1, 8, 4)
    keys[0, 3] = torch.tensor([6.0, 0, 0, 0])  # the key the window's queries look for
    cache = planted(keys, budget=3)
    cache = KVCache(
        **{**cache.__dict__, "queries": torch.tensor([1.0, 0, 0, 0]).expand(1, 1, 2, 4)}
    )
    assert kept_positions(policy.compress(cache)) == [[3, 6, 7]]


def test_pyramidkv_spreads_its_budget_over_the_layers_with_the_same_mean():
    policy = build_policy("pyramidkv(budget=40, spread=0.5)")
    budgets = [policy.layer_budget(layer, 5) for layer in range(5)]
    assert budgets == sorted(budgets, reverse=True) and budgets[0] > budgets[-1]
    assert budgets[0] == 60 and budgets[-1] == 20 and sum(budgets) == 5 * 40


def test_knorm_keeps_the_smallest_keys():
    norms = torch.tensor([5.0, 1.0, 4.0, 0.5, 3.0])
    keys = (norms[:, None] * torch.nn.functional.normalize(torch.randn(5, 4), dim=-1))[None]
    assert kept_positions(build_policy("knorm(budget=2)").compress(planted(keys, 2))) == [[1, 3]]


def test_random_eviction_is_seeded_and_keeps_its_budget():
    def kept(seed: int) -> list[list[int]]:
        model, x = backbone(layers=1), tokens(batch=1, length=40)
        _, states, _ = model.stream_states(x, policy=build_policy(f"random(budget=8, seed={seed})"))
        return kept_positions(states[0])

    assert kept(0) == kept(0) and kept(0) != kept(1)
    assert all(len(head) == 8 for head in kept(0))
    assert any(head != list(range(32, 40)) for head in kept(0))  # not a window


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("axis", ["token", "channel"])
def test_quantize_round_trips_within_half_a_level(bits, axis):
    x = torch.randn(2, 3, 32, 8)
    dim = -1 if axis == "token" else -2
    error = (fake_quantize(x, bits, dim) - x).abs()
    half_level = (x.amax(dim, keepdim=True) - x.amin(dim, keepdim=True)) / (2 * (2**bits - 1))
    assert (error <= half_level + 1e-6).all()
    policy = build_policy(f"quantize(bits={bits}, axis={axis}, group=8)")
    cache = policy.compress(planted(x[0], budget=None, length=32))
    assert cache.quantized == 32
    assert (cache.keys[0] - x[0]).abs().max() <= half_level.max() + 1e-6
    full = planted(x[0], budget=None).floats()
    assert policy.floats(cache) < full * (bits / 32 + 0.5)


def test_merging_identical_neighbours_changes_no_attention_output():
    """Two equal keys with equal values attend like one entry counted twice (+ log 2)."""
    mixer = CausalSelfAttention(8, 1, resolve_mixer("softmax(positions=none)").options).eval()
    x = torch.randn(1, 6, 8)
    x[0, 3] = x[0, 2]  # tokens 2 and 3 give the same key and value
    with torch.no_grad():
        full_state = mixer.init_state(1, x.device, x.dtype)
        merged = build_policy("merge(budget=5)").new_cache(1, 1, 8, x.device, x.dtype, 0, 1, 1)
        for t in range(6):
            expected, full_state = mixer.step(x[:, t], full_state)
            got, merged = mixer.step(x[:, t], merged)
        assert merged.size == 5 and merged.counts.max() == 2
        assert (got - expected).abs().max() < 1e-5


def test_example_eviction_keeps_whole_examples():
    policy = build_policy("h2o(budget=8, unit=example)")
    model, x = backbone(), tokens(length=21)
    _, states, _ = model.stream_states(x, policy=policy, group=2)
    for cache in states:
        for head in cache.positions.flatten(0, 1).tolist():
            examples = [position // 2 for position in head]
            complete = [e for e in set(examples) if e != 10]  # the newest, x only, is kept
            assert all(examples.count(e) == 2 for e in complete), head
            assert 10 in examples


def test_example_eviction_refuses_a_budget_below_two_examples():
    policy = build_policy("window(budget=3, unit=example)")
    with pytest.raises(ConfigError, match="two examples"):
        policy.new_cache(1, 1, 4, torch.device("cpu"), torch.float32, 0, 1, 2)


@pytest.mark.parametrize("scheme", ["rotary", "alibi"])
def test_evicted_caches_keep_their_keys_positions(scheme):
    """A window cache streams exactly like banded attention with the original distances."""
    width, heads, window, length = 16, 2, 5, 12
    mixer = CausalSelfAttention(width, heads, resolve_mixer(f"softmax(positions={scheme})").options)
    x = torch.randn(2, length, width)
    with torch.no_grad():
        q, k, v = mixer._queries_keys_values(x)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(width // heads)
        i, j = torch.arange(length)[:, None], torch.arange(length)[None]
        if scheme == "alibi":
            scores = scores - mixer.alibi_slopes[:, None, None] * (i - j).float()
        band = (j <= i) & (j > i - window - 1)  # its own key and the `window` before it
        expected = mixer._merge(scores.masked_fill(~band, float("-inf")).softmax(-1) @ v)
        cache = build_policy(f"window(budget={window})").new_cache(
            2, heads, width // heads, x.device, x.dtype, 0, 1, 1
        )
        outputs = []
        for t in range(length):
            output, cache = mixer.step(x[:, t], cache)
            outputs.append(output)
    assert (torch.stack(outputs, 1) - expected).abs().max() < 1e-5


def test_policy_specs_are_checked_and_named():
    assert build_policy("window(budget=8)").spec == "window(budget=8)"
    assert build_policy("h2o").spec == "h2o"
    with pytest.raises(ConfigError, match="budget"):
        build_policy("window(budget=0)")
    with pytest.raises(ConfigError, match="did you mean"):
        build_policy("snapvk")
    with pytest.raises(ConfigError, match="given twice"):
        tiny_config(eval={"caches": ["window(budget=8)", "window(budget=8)"]})
