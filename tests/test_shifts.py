"""Distribution shifts: each changes exactly what it claims, and evaluation under shifts."""

from __future__ import annotations

import math

import pytest
import torch

from iclab.algorithms import build_algorithm
from iclab.evaluation.curves import evaluate
from iclab.evaluation.shifts import STANDARD_SHIFTS, build_shift, resolve_shifts
from iclab.tasks import make_task


def views_of(spec: str, task_name: str = "linear_regression", n_dims=4, batch=8, n_points=12):
    task = make_task(task_name, n_dims=n_dims)
    episode = task.sample(batch, n_points, torch.Generator().manual_seed(0))
    views = build_shift(spec).views(episode, task, torch.Generator().manual_seed(1))
    return task, episode, views


def linear_targets(view):
    return torch.einsum("bnd,bd->bn", view.inputs, view.meta["w"])


def test_skewed_covariance_has_the_claimed_spectrum_in_every_prompt():
    n_points, d = 20_000, 4
    _, _, [view] = views_of("skewed_covariance", n_dims=d, batch=3, n_points=n_points)
    expected = torch.tensor([1 / i**2 for i in range(1, d + 1)])
    expected = expected * d / expected.sum()
    for inputs in view.inputs:
        eigenvalues = torch.linalg.eigvalsh(inputs.T @ inputs / n_points).flip(0)
        # each sample eigenvalue has relative sd ≈ sqrt(2 / n) ≈ 1%: allow 5 of them
        assert torch.allclose(eigenvalues, expected, rtol=5 * math.sqrt(2 / n_points))
    assert torch.allclose(view.targets, linear_targets(view), atol=1e-5)


def test_half_subspace_puts_every_input_of_a_prompt_in_a_half_dimensional_subspace():
    d = 6
    _, _, [view] = views_of("half_subspace", n_dims=d, batch=4, n_points=500)
    for inputs in view.inputs:
        singular = torch.linalg.svdvals(inputs)
        assert (singular[: d // 2] > 1.0).all() and (singular[d // 2 :] < 1e-3).all()
    # scaled so E‖x‖² = d, as unshifted inputs: 2000 draws of a χ²-like norm, sd ≈ sqrt(2d)
    mean_norm = view.inputs.pow(2).sum(-1).mean().item()
    assert abs(mean_norm - d) < 5 * math.sqrt(2 * d) / math.sqrt(2000)
    assert torch.allclose(view.targets, linear_targets(view), atol=1e-5)


@pytest.mark.parametrize("factor", [0.5, 3.0])
def test_scale_inputs_multiplies_inputs_and_relabels(factor):
    _, episode, [view] = views_of(f"scale_inputs(factor={factor})")
    assert torch.equal(view.inputs, episode.inputs * factor)
    assert torch.allclose(view.targets, episode.targets * factor, atol=1e-5)  # linear f


def test_scale_inputs_keeps_a_decision_trees_outputs():
    _, episode, [view] = views_of("scale_inputs(factor=3)", "decision_tree")
    assert torch.equal(view.targets, episode.targets)  # trees split on signs


def test_scale_targets_multiplies_targets_only():
    _, episode, [view] = views_of("scale_targets(factor=3)")
    assert torch.equal(view.inputs, episode.inputs)
    assert torch.equal(view.targets, episode.targets * 3)


def test_noisy_targets_add_noise_of_the_given_std_to_every_target():
    _, episode, [view] = views_of("noisy_targets(std=0.5)", batch=200, n_points=50)
    noise = view.targets - episode.targets
    assert torch.equal(view.inputs, episode.inputs)
    tolerance = 5 * 0.5 / math.sqrt(noise.numel())  # 5 standard errors of the mean
    assert abs(noise.mean().item()) < tolerance
    assert abs(noise.std().item() - 0.5) < 5 * 0.5 / math.sqrt(2 * noise.numel())


def test_random_orthant_puts_the_context_in_one_orthant_and_keeps_the_query():
    _, episode, views = views_of("random_orthant", n_points=10)
    assert len(views) == 10
    for j, view in enumerate(views):
        assert view.n_points == j + 1
        assert view.loss_mask[:, j].all() and view.loss_mask.sum() == view.batch_size
        context = view.inputs[:, :j]
        if j > 0:
            signs = context.sign()
            assert (signs == signs[:, :1]).all()  # one orthant per prompt
            assert torch.equal(context.abs(), episode.inputs[:, :j].abs())
        assert torch.equal(view.inputs[:, j], episode.inputs[:, j])
        assert torch.allclose(view.targets, linear_targets(view), atol=1e-5)


def test_orthogonal_queries_have_zero_inner_product_with_every_context_input():
    d = 5
    _, episode, views = views_of("orthogonal_query", n_dims=d, n_points=12)
    assert len(views) == d  # the context spans everything from k = d on
    for j, view in enumerate(views):
        query, context = view.inputs[:, j], view.inputs[:, :j]
        assert torch.equal(context, episode.inputs[:, :j])
        products = torch.einsum("bnd,bd->bn", context, query)
        scale = context.norm(dim=-1) * query.norm(dim=-1)[:, None]
        assert (products.abs() <= 1e-5 * scale).all()
        assert torch.allclose(query.norm(dim=-1), episode.inputs[:, j].norm(dim=-1), rtol=1e-5)
        assert torch.allclose(view.targets[:, j], linear_targets(view)[:, j], atol=1e-5)


def test_query_in_context_repeats_an_earlier_example_with_its_target():
    _, episode, views = views_of("query_in_context", n_points=8)
    assert [view.n_points for view in views] == list(range(2, 9))
    for view in views:
        j = view.n_points - 1
        assert torch.equal(view.inputs[:, :j], episode.inputs[:, :j])
        same = (view.inputs[:, :j] == view.inputs[:, j : j + 1]).all(-1)  # (B, j)
        assert same.any(-1).all()
        repeated = same.float().argmax(-1)
        earlier = view.targets[torch.arange(view.batch_size), repeated]
        assert torch.allclose(view.targets[:, j], earlier, atol=1e-5)


def test_least_squares_knows_nothing_about_orthogonal_queries_and_everything_about_repeats():
    """Known answers: the minimum-norm least-squares fit lies in the span of the context, so it
    predicts 0 for an orthogonal query (the zero predictor's error) and interpolates a repeat."""
    task = make_task("linear_regression", n_dims=4)
    learners = [build_algorithm("least_squares", task), build_algorithm("zero", task)]
    shifts = [build_shift("orthogonal_query"), build_shift("query_in_context")]
    curves = evaluate(learners, task, 10, 256, 128, seed=0, shifts=shifts).curves
    by = {(p.learner, p.shift, p.k): p for p in curves}
    for k in range(4):
        assert by["least_squares", "orthogonal_query", k].mean == pytest.approx(
            by["zero", "orthogonal_query", k].mean, rel=1e-4
        )
    assert all(by["least_squares", "query_in_context", k].mean < 1e-8 for k in range(1, 10))
    assert ("least_squares", "orthogonal_query", 4) not in by


def test_errors_under_a_shift_are_relative_to_the_zero_predictor_under_that_shift():
    task = make_task("linear_regression", n_dims=4)
    shifts = [build_shift("scale_targets(factor=3)"), build_shift("noisy_targets")]
    curves = evaluate([build_algorithm("zero", task)], task, 6, 2000, 500, 3, shifts=shifts).curves
    assert {p.shift for p in curves} == {"none", "scale_targets(factor=3)", "noisy_targets"}
    for point in curves:  # 2 half-widths ≈ 4 standard errors
        assert abs(point.mean - 1.0) < 2 * (point.ci_high - point.ci_low)


def test_paired_difference_equals_the_difference_of_means():
    task = make_task("linear_regression", n_dims=4)
    learners = [build_algorithm(spec, task) for spec in ("averaging", "least_squares", "zero")]
    result = evaluate(
        learners,
        task,
        8,
        300,
        100,
        0,
        shifts=[build_shift("skewed_covariance")],
        reference="least_squares",
    )
    means = {(p.learner, p.shift, p.k): p.mean for p in result.curves}
    assert {d.learner for d in result.differences} == {"averaging", "zero"}
    for row in result.differences:
        assert row.reference == "least_squares"
        expected = means[row.learner, row.shift, row.k] - means["least_squares", row.shift, row.k]
        assert row.mean == pytest.approx(expected, abs=1e-12)
        assert row.ci_low <= row.mean <= row.ci_high and row.n_prompts == 300


def test_paired_interval_is_narrower_than_either_learners_own():
    """ridge and least squares err on the same hard prompts, so their difference varies far
    less than either error: the point of pairing."""
    task = make_task("linear_regression", n_dims=4)
    learners = [build_algorithm(spec, task) for spec in ("ridge", "least_squares")]
    result = evaluate(learners, task, 8, 500, 250, 0, reference="least_squares")
    own = {(p.learner, p.k): p.ci_high - p.ci_low for p in result.curves}
    for row in result.differences:
        if row.k >= 1:
            assert row.ci_high - row.ci_low < own["ridge", row.k]


def test_an_unknown_reference_is_a_clear_error():
    task = make_task("linear_regression", n_dims=4)
    with pytest.raises(ValueError, match="reference learner 'ols' is not evaluated"):
        evaluate([build_algorithm("zero", task)], task, 4, 4, 4, 0, reference="ols")


def test_specs_are_canonical_and_bad_options_are_named():
    """A shift is named as every spec is: its name and the options given, canonically written
    (so ``scale_inputs(factor=2)`` keeps its name in tables and plot files)."""
    assert build_shift("scale_inputs(factor=2.0)").spec == "scale_inputs(factor=2)"
    assert build_shift(" scale_inputs( factor = 0.50 ) ").spec == "scale_inputs(factor=0.5)"
    assert build_shift("skewed_covariance(decay=2)").spec == "skewed_covariance(decay=2)"
    assert build_shift("skewed_covariance").spec == "skewed_covariance"
    assert build_shift("scale_inputs").options.factor == 2.0  # every option has a default
    assert build_shift("scale_inputs").spec == "scale_inputs"
    with pytest.raises(ValueError, match=r"scale_inputs.*factor.*greater than 0"):
        build_shift("scale_inputs(factor=0)")
    with pytest.raises(ValueError, match=r"scale_inputs.*bogus"):
        build_shift("scale_inputs(factor=2, bogus=1)")
    with pytest.raises(KeyError, match="registered: half_subspace"):
        build_shift("tilt")


def test_standard_shifts_are_written_canonically_so_their_names_are_kept():
    assert [build_shift(spec).spec for spec in STANDARD_SHIFTS] == list(STANDARD_SHIFTS)


def test_shifts_a_task_does_not_allow_are_errors_or_left_out_of_all():
    conjunction = make_task("conjunction")
    with pytest.raises(ValueError, match="noisy_targets changes targets: regression tasks only"):
        resolve_shifts(["noisy_targets"], conjunction)
    with pytest.raises(ValueError, match="real-valued Gaussian inputs"):
        resolve_shifts("scale_inputs(factor=2)", conjunction)
    shifts, skipped = resolve_shifts("all", conjunction)
    assert [shift.spec for shift in shifts] == ["query_in_context"]
    assert len(skipped) == len(STANDARD_SHIFTS) - 1
    shifts, skipped = resolve_shifts("all", make_task("linear_regression"))
    assert len(shifts) == len(STANDARD_SHIFTS) and not skipped


def test_every_learner_sees_the_same_shifted_prompts():
    class Recorder:
        def __init__(self, name):
            self.name, self.seen = name, []

        def predict(self, episode):
            self.seen.append(episode.inputs.clone())
            return torch.zeros_like(episode.targets)

    first, second = Recorder("a"), Recorder("b")
    task = make_task("linear_regression", n_dims=3)
    evaluate([first, second], task, 5, 20, 10, 0, shifts=[build_shift("random_orthant")])
    assert len(first.seen) == 2 * (1 + 5)  # 2 batches × (unshifted + one view per position)
    assert all(torch.equal(x, y) for x, y in zip(first.seen, second.seen, strict=True))


def test_the_readme_describes_every_shift():
    from pathlib import Path

    from iclab.evaluation.shifts import SHIFTS

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name in SHIFTS.names():
        assert f"| `{name}" in readme, f"README's shift table has no row for {name}"


def test_composed_shifts_apply_in_turn():
    _, episode, [view] = views_of("scale_inputs(factor=2)+scale_targets(factor=3)")
    assert torch.equal(view.inputs, episode.inputs * 2)
    assert torch.allclose(view.targets, episode.targets * 6, atol=1e-4)
    _, episode, views = views_of("scale_inputs(factor=2) + orthogonal_query", n_dims=4)
    assert len(views) == 4
    for j, view in enumerate(views):
        assert torch.equal(view.inputs[:, :j], episode.inputs[:, :j] * 2)
        assert torch.allclose(view.inputs[:, j].norm(dim=-1), 2 * episode.inputs[:, j].norm(dim=-1))


def test_a_composed_shift_is_named_by_its_parts_and_checked_part_by_part():
    shift = build_shift("skewed_covariance+noisy_targets(std=0.5)")
    assert shift.spec == "skewed_covariance+noisy_targets(std=0.5)"
    with pytest.raises(ValueError, match="random_orthant gives one prompt per query"):
        build_shift("random_orthant+noisy_targets")
    with pytest.raises(ValueError, match=r"scale_targets\(factor=2\) changes targets"):
        resolve_shifts("scale_targets(factor=2)+query_in_context", make_task("conjunction"))
