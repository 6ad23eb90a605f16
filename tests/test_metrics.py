"""Loss and score per episode kind, and summaries of partly scored positions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from iclab.episode import Episode
from iclab.evaluation.curves import summarise
from iclab.metrics import score, training_loss
from iclab.tasks import make_task


def classification_episode(mask=None, meta=None, kind="classification"):
    targets = torch.tensor([[0, 2, 1], [1, 1, 0]])
    return Episode(torch.zeros(2, 3, 4), targets, kind=kind, meta=meta or {}, loss_mask=mask)


def test_regression_score_is_squared_error_over_the_prior_target_scale():
    task = make_task("linear_regression", 4, {"weight_std": 2.0, "noise_std": 1.0})
    assert task.target_scale == 4 * 4 + 1
    episode = Episode(torch.zeros(1, 2, 4), torch.tensor([[1.0, -3.0]]))
    values = score(torch.tensor([[0.0, 0.0]]), episode, task.target_scale)
    torch.testing.assert_close(values, torch.tensor([[1 / 17, 9 / 17]], dtype=torch.float64))


def test_classification_loss_is_masked_cross_entropy_and_score_is_accuracy():
    logits = torch.randn(2, 3, 3)
    mask = torch.tensor([[False, True, True], [True, False, False]])
    episode = classification_episode(mask)
    every = F.cross_entropy(logits.transpose(1, 2), episode.targets, reduction="none")
    torch.testing.assert_close(training_loss(logits, episode), every[mask].mean())
    values = score(logits, episode)
    correct = (logits.argmax(-1) == episode.targets).double()
    assert torch.equal(values[mask], correct[mask]) and values[~mask].isnan().all()


def test_last_only_loss_is_the_last_positions_loss_within_the_tasks_mask():
    """train.loss_on=last: only the last prediction is trained, and a prompt whose task masks
    its last position out contributes nothing."""
    regression = Episode(torch.zeros(2, 3, 4), torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, -1.0]]))
    torch.testing.assert_close(
        training_loss(torch.zeros(2, 3), regression, last_only=True), torch.tensor(5.0)
    )
    logits = torch.randn(2, 3, 3)
    mask = torch.tensor([[False, True, True], [True, False, False]])
    episode = classification_episode(mask)
    every = F.cross_entropy(logits.transpose(1, 2), episode.targets, reduction="none")
    torch.testing.assert_close(training_loss(logits, episode, last_only=True), every[0, -1])


def test_token_score_counts_any_valid_continuation_when_the_task_says_which_are_valid():
    valid = torch.zeros(2, 3, 3, dtype=torch.bool)
    valid[0, 0, [0, 1]] = True  # position (0, 0): tokens 0 and 1 are both fine
    logits = torch.zeros(2, 3, 3)
    logits[0, 0, 1] = 5.0  # predicts 1, the target is 0, still valid
    episode = classification_episode(meta={"valid_next": valid}, kind="tokens")
    values = score(logits, episode)
    assert values[0, 0] == 1.0 and values[1].sum() == 0.0


def test_predictions_of_the_wrong_shape_are_refused_with_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(2, 3, 'C'\)"):
        training_loss(torch.zeros(2, 3), classification_episode())
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        training_loss(torch.zeros(1, 2, 1), Episode(torch.zeros(1, 2, 1), torch.zeros(1, 2)))


def test_summaries_skip_unscored_positions_and_count_only_scored_prompts():
    scores = torch.tensor([[math.nan, 1.0, 0.0], [math.nan, 0.0, 1.0], [math.nan, 1.0, math.nan]])
    points = summarise(scores.double(), "x", "accuracy")
    assert [p.k for p in points] == [1, 2]
    assert [p.n_prompts for p in points] == [3, 2]
    assert points[0].mean == pytest.approx(2 / 3) and points[1].mean == pytest.approx(0.5)
    half_width = 1.959963984540054 * math.sqrt(1 / 3) / math.sqrt(3)  # sample std of (1, 0, 1)
    assert points[0].ci_high - points[0].mean == pytest.approx(half_width)


def test_first_prompts_of_an_episode_keep_their_meta_and_mask():
    episode = classification_episode(
        mask=torch.tensor([[True, False, True], [False, True, True]]),
        meta={"w": torch.tensor([[1.0], [2.0]])},
    )
    head = episode.first(1)
    assert torch.equal(head.targets, episode.targets[:1]) and head.meta["w"].tolist() == [[1.0]]
    assert head.loss_mask.tolist() == [[True, False, True]] and head.kind == "classification"


def test_a_non_finite_prediction_scores_the_worst_value_not_unscored():
    episode = Episode(torch.zeros(1, 3, 2), torch.tensor([[1.0, -3.0, 0.5]]))
    prediction = torch.tensor([[math.nan, math.inf, 0.5]])
    assert score(prediction, episode).tolist() == [[math.inf, math.inf, 0.0]]
    logits = torch.zeros(2, 3, 3)
    logits[0, 0] = torch.tensor([math.nan, 0.0, 0.0])  # argmax would pick the NaN: class 0
    values = score(logits, classification_episode())
    assert values[0, 0] == 0.0 and values[1, 2] == 1.0  # the target there is class 0 too
    mask = torch.tensor([[True, False, True]])
    masked = Episode(episode.inputs, episode.targets, loss_mask=mask)
    assert score(prediction, masked)[0, 1].isnan()  # unscored stays unscored
