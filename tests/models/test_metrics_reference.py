"""Our metrics (scikit-survival under guards) against a second implementation, torchsurv.

Conventions both libraries share (so they agree, and these tests pin it):
- a pair (i, j) is comparable when i has an event and T_i < T_j, or T_i == T_j and j is
  censored (censoring is taken to happen after an event at the same time); two events at
  the same time are not comparable;
- tied risks (|r_i - r_j| <= 1e-8) count 1/2;
- IPCW weights use the Kaplan-Meier estimate of the censoring distribution on the training
  fold, in which events at t leave the risk set before the censorings at t, read at its
  right-continuous value G(T_i) (not the left limit G(T_i-)).

Where they differ:
- torchsurv casts risks to float32 for the tie test, so risks closer than float32 spacing
  tie there and not in sksurv;
- torchsurv computes the Kaplan-Meier ratios in float32: weighted metrics agree to ~1e-8
  (measured max 4e-8 on n = 50..300), asserted at 1e-6;
- beyond the last training time torchsurv holds G's last value where sksurv refuses.
sksurv issue 428 (Uno's C vs R's survAUC on an event tied with a censoring) is a
comparability convention, not a G-limit one: survAUC's value is reproduced by dropping the
event/censored-at-the-same-time pair. All inputs are tiny literals or seeded random draws.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import torch
from torchsurv.metrics.auc import Auc
from torchsurv.metrics.brier_score import BrierScore
from torchsurv.metrics.cindex import ConcordanceIndex
from torchsurv.stats.ipcw import get_ipcw

from casegraph.models.metrics import (
    EvaluationWindow,
    evaluation_window,
    harrell_c,
    integrated_brier,
    time_dependent_auc,
    uno_c,
)
from casegraph.schema import SurvivalTarget

WEIGHTED_TOL = 1e-6  # float32 Kaplan-Meier inside torchsurv; measured differences <= 4e-8
COUNT_TOL = 1e-12  # unweighted pair counts: both sides are exact ratios in float64
RANDOM_CASES = [(0, 50, 0.3), (1, 120, 0.45), (2, 300, 0.6), (3, 80, 0.5), (4, 200, 0.4)]


def _real(values: npt.ArrayLike) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64))


def _flags(values: npt.ArrayLike) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=bool))


def _cohort(seed: int, n: int, censored: float, grid: float = 0.0
            ) -> tuple[np.ndarray, SurvivalTarget]:
    """Risk (n,) and exponential survival with about ``censored`` censoring.

    ``grid`` > 0 rounds times up to multiples of it (tied times, events tied with
    censorings) and risks to multiples of 0.5 (tied risks, exact in float32).
    """
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    event_time = rng.exponential(10.0 * np.exp(-risk))
    censor_time = rng.exponential(10.0 * (1.0 - censored) / censored, n)
    time = np.minimum(event_time, censor_time)
    if grid > 0:
        time = np.ceil(time / grid) * grid
        risk = np.round(risk * 2.0) / 2.0
    return risk, SurvivalTarget.from_arrays(time, event_time <= censor_time)


def _fold(seed: int, n: int, censored: float, grid: float = 0.0
          ) -> tuple[np.ndarray, SurvivalTarget, SurvivalTarget, EvaluationWindow]:
    """Test risk, train and test targets and our guarded window for one seeded fold."""
    risk, test = _cohort(seed, n, censored, grid)
    _, train = _cohort(seed + 1000, 2 * n, censored, grid)
    window = evaluation_window(train, test)
    assert window is not None and window.times.size >= 2
    return risk, train, test, window


def _training_ipcw(train: SurvivalTarget, at: npt.ArrayLike) -> torch.Tensor:
    """torchsurv's 1/G(t) from the training censoring KM, at ``at`` (m,), in float64."""
    return get_ipcw(_flags(train.event), _real(train.time), _real(at)).double()


def _torchsurv_uno(risk: npt.ArrayLike, test: SurvivalTarget, weight: torch.Tensor,
                   tau: float) -> float:
    return float(ConcordanceIndex()(_real(risk), _flags(test.event), _real(test.time),
                                    weight=weight, tmax=_real(tau)))


# --- Harrell's C ----------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "n", "censored"), RANDOM_CASES)
def test_harrell_matches_torchsurv_on_continuous_inputs(seed: int, n: int, censored: float
                                                        ) -> None:
    """No ties: plain Harrell's C, unweighted, agrees to float64 rounding."""
    risk, target = _cohort(seed, n, censored)
    assert 0.25 < 1.0 - target.event.mean() < 0.65
    reference = ConcordanceIndex()(_real(risk), _flags(target.event), _real(target.time))
    assert harrell_c(risk, target) == pytest.approx(float(reference), abs=COUNT_TOL)


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_harrell_matches_torchsurv_with_tied_times_and_risks(seed: int) -> None:
    """Tied risks count 1/2, tied events are not comparable, an event tied with a censoring
    is; risks on a 0.5 grid are exact in float32, so torchsurv's tie test agrees."""
    risk, target = _cohort(seed, 150, 0.45, grid=1.0)
    assert np.unique(target.time).size < 60 and np.unique(risk).size < 20
    reference = ConcordanceIndex()(_real(risk), _flags(target.event), _real(target.time))
    assert harrell_c(risk, target) == pytest.approx(float(reference), abs=COUNT_TOL)


def test_harrell_tie_conventions_by_hand() -> None:
    """Comparable pairs of five cases, by hand (risk higher = earlier event):

    A(t=1, event, r=3), B(t=1, event, r=1), C(t=1, censored, r=2), D(t=2, event, r=3),
    E(t=4, censored, r=0). A-B: tied events, not comparable. A-C: event vs censored at
    the same time, comparable, concordant; B-C discordant. A-D: tied risk, 1/2. B-D
    discordant. A-E, B-E, D-E concordant. C censored first: C-D, C-E not comparable.
    C = 4.5 / 7. The strict convention (T_i < T_j only, R's survAUC) drops A-C and B-C:
    3.5 / 5 = 0.7, which neither library reports.
    """
    target = SurvivalTarget.from_arrays([1.0, 1.0, 1.0, 2.0, 4.0], [1, 1, 0, 1, 0])
    risk = np.array([3.0, 1.0, 2.0, 3.0, 0.0])
    reference = ConcordanceIndex()(_real(risk), _flags(target.event), _real(target.time))
    assert harrell_c(risk, target) == pytest.approx(4.5 / 7, abs=COUNT_TOL)
    assert float(reference) == pytest.approx(4.5 / 7, abs=COUNT_TOL)


def test_torchsurv_ties_risks_closer_than_float32_spacing() -> None:
    """Documented difference: torchsurv tests ties on float32 risks (tied_tol 1e-8 after
    the cast), sksurv on float64. 1000.00001 and 1000 round to one float32: a tie (1/2)
    there, a concordant pair here. Three comparable pairs, all concordant in float64."""
    target = SurvivalTarget.from_arrays([1.0, 2.0, 3.0], [1, 1, 0])
    risk = np.array([1000.00001, 1000.0, 0.0])
    reference = ConcordanceIndex()(_real(risk), _flags(target.event), _real(target.time))
    assert harrell_c(risk, target) == 1.0
    assert float(reference) == pytest.approx(2.5 / 3, abs=COUNT_TOL)


# --- Uno's C --------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "n", "censored"), RANDOM_CASES)
def test_uno_matches_torchsurv_with_training_ipcw(seed: int, n: int, censored: float) -> None:
    """Weights 1/G(T_i)^2 from the training censoring KM (right-continuous), truncated at
    our window's tau (pairs with T_i < tau), on test times clipped to tau."""
    risk, train, test, window = _fold(seed, n, censored)
    clipped = window.test_clipped
    weight = _training_ipcw(train, clipped.time)
    reference = _torchsurv_uno(risk, clipped, weight, window.tau)
    assert uno_c(risk, train, test) == pytest.approx(reference, abs=WEIGHTED_TOL)


@pytest.mark.parametrize("grid", [0.5, 1.0, 5.0])
def test_uno_matches_torchsurv_on_tied_times(grid: float) -> None:
    """Tied times (events tied with training and test censorings) and tied risks: both
    read G at its right-continuous value with events leaving the risk set first."""
    risk, train, test, window = _fold(20, 200, 0.45, grid=grid)
    clipped = window.test_clipped
    reference = _torchsurv_uno(risk, clipped, _training_ipcw(train, clipped.time), window.tau)
    assert uno_c(risk, train, test) == pytest.approx(reference, abs=WEIGHTED_TOL)


ISSUE_428_TIME = np.array([11.0, 11.0, 26.0, 89.0, 128.0, 299.0, 300.0])
ISSUE_428_EVENT = np.array([1, 0, 0, 1, 0, 1, 0], dtype=bool)
ISSUE_428_RISK = np.array([-0.02, 1.20, -0.56, -1.33, -0.81, 1.02, -1.29])


def _strict_uno(time: np.ndarray, event: np.ndarray, risk: np.ndarray, weight: np.ndarray,
                tau: float) -> float:
    """Uno's C with only T_i < T_j comparable (R survAUC's convention), by definition."""
    numerator = denominator = 0.0
    for i in np.flatnonzero(event & (time < tau)):
        later = time > time[i]
        w = weight[i] ** 2
        denominator += w * later.sum()
        numerator += w * ((risk[later] < risk[i]).sum() + 0.5 * (risk[later] == risk[i]).sum())
    return numerator / denominator


def test_uno_on_sksurv_issue_428_example() -> None:
    """sksurv issue 428: train = test, tau = 299 (our window picks it: G(300) = 0).
    sksurv reports 0.374269 and R survAUC 0.412903. torchsurv agrees with us; survAUC's
    value is the strict comparability convention with the same right-continuous G
    (the event at 11 is not compared with the censoring at 11)."""
    target = SurvivalTarget.from_arrays(ISSUE_428_TIME, ISSUE_428_EVENT)
    window = evaluation_window(target, target)
    assert window is not None and window.tau == 299.0
    weight = _training_ipcw(target, ISSUE_428_TIME)
    ours = uno_c(ISSUE_428_RISK, target, target)
    assert ours == pytest.approx(0.37426900584795325, abs=1e-12)
    assert _torchsurv_uno(ISSUE_428_RISK, target, weight, 299.0) == pytest.approx(
        ours, abs=WEIGHTED_TOL)
    strict = _strict_uno(ISSUE_428_TIME, ISSUE_428_EVENT, ISSUE_428_RISK, weight.numpy(), 299.0)
    assert strict == pytest.approx(0.4129032, abs=1e-7)


def test_uno_reads_g_at_its_right_limit_not_left() -> None:
    """The G-limit convention on the issue-428 data: censoring KM (events leave first)
    1 -> 5/6 at 11 -> 2/3 at 26 -> 4/9 at 128 -> 0 at 300. Events at 11, 89, 299 get
    G(T_i) = 5/6, 2/3, 4/9 (ours, torchsurv); the left limit G(T_i-) = 1, 2/3, 4/9 changes
    only the event tied with a censoring, and moves the C from 0.3743 to 0.3137."""
    target = SurvivalTarget.from_arrays(ISSUE_428_TIME, ISSUE_428_EVENT)
    right = _training_ipcw(target, ISSUE_428_TIME)
    events = torch.as_tensor(ISSUE_428_EVENT)
    assert right[events].tolist() == pytest.approx([6 / 5, 3 / 2, 9 / 4], abs=1e-6)
    left = right.clone()
    left[0] = 1.0  # G(11-) = 1: no censoring strictly before 11
    ours = uno_c(ISSUE_428_RISK, target, target)
    assert _torchsurv_uno(ISSUE_428_RISK, target, right, 299.0) == pytest.approx(
        ours, abs=WEIGHTED_TOL)
    left_limit = _torchsurv_uno(ISSUE_428_RISK, target, left, 299.0)
    assert left_limit == pytest.approx(0.3137254901960785, abs=WEIGHTED_TOL)
    assert abs(ours - left_limit) > 0.05


# --- cumulative/dynamic AUC -----------------------------------------------------------------


@pytest.mark.parametrize(("seed", "n", "censored", "grid"),
                         [(*case, 0.0) for case in RANDOM_CASES] + [(30, 150, 0.45, 1.0)])
def test_cumulative_dynamic_auc_matches_torchsurv(seed: int, n: int, censored: float,
                                                  grid: float) -> None:
    """Cases T_i <= t with an event weighted 1/G(T_i), controls T_i > t unweighted, tied
    risks collapsed to one ROC step, curve from (0, 0); at each window time. The mean is
    the AUC averaged over the test KM's drops, as torchsurv's integral()."""
    risk, train, test, window = _fold(seed, n, censored, grid)
    clipped = window.test_clipped
    auc = Auc()
    reference = auc(_real(risk), _flags(clipped.event), _real(clipped.time),
                    weight=_training_ipcw(train, clipped.time),
                    new_time=_real(window.times),
                    weight_new_time=_training_ipcw(train, window.times))
    ours, mean_auc = time_dependent_auc(risk, train, test)
    np.testing.assert_allclose(ours, reference.numpy(), rtol=0, atol=WEIGHTED_TOL)
    assert mean_auc == pytest.approx(float(auc.integral()), abs=WEIGHTED_TOL)


# --- Brier score and IBS --------------------------------------------------------------------


def _exponential_survival(risk: np.ndarray, times: np.ndarray) -> np.ndarray:
    """S_i(t) = exp(-t e^{r_i} / 10), (n, m): the generating model's curves."""
    return np.exp(-np.outer(np.exp(risk), times) / 10.0)


def _torchsurv_brier(survival: np.ndarray, times: np.ndarray, train: SurvivalTarget,
                     test: SurvivalTarget) -> tuple[np.ndarray, float]:
    brier = BrierScore()
    scores = brier(_real(survival), _flags(test.event), _real(test.time),
                   new_time=_real(times), weight=_training_ipcw(train, test.time),
                   weight_new_time=_training_ipcw(train, times))
    return scores.numpy(), float(brier.integral())


@pytest.mark.parametrize(("seed", "n", "censored", "grid"),
                         [(*case, 0.0) for case in RANDOM_CASES] + [(40, 150, 0.45, 1.0)])
def test_brier_and_ibs_match_torchsurv(seed: int, n: int, censored: float, grid: float
                                       ) -> None:
    """BS(t): events by t weighted 1/G(T_i), survivors past t by 1/G(t); IBS: trapezoid
    over the window's times divided by their span (sksurv integrated_brier_score).
    BS at a single time agrees too."""
    from sksurv.metrics import brier_score

    risk, train, test, window = _fold(seed, n, censored, grid)
    survival = _exponential_survival(risk, window.times)
    reference_scores, reference_ibs = _torchsurv_brier(survival, window.times, train, test)
    assert integrated_brier(survival, window.times, train, test) == pytest.approx(
        reference_ibs, abs=WEIGHTED_TOL)
    # at one time: the clipped test times keep sksurv inside the training follow-up
    # (a clipped case is a control at every window time, see the test below)
    _, ours_at_first = brier_score(train.to_structured(), window.test_clipped.to_structured(),
                                   survival[:, 0], window.times[:1])
    assert ours_at_first[0] == pytest.approx(reference_scores[0], abs=WEIGHTED_TOL)


def test_ibs_with_a_test_case_beyond_the_training_follow_up() -> None:
    """Fixed bug: the last training time is an event (G ends above 0) and one test case
    outlives every training time. It is a control at every window time, weighted by
    G(t); sksurv still looked up G at its own time, refused, and the fold's IBS was NaN.
    We now agree with torchsurv (which holds G's last value there)."""
    rng = np.random.default_rng(3)
    train_time = rng.exponential(10.0, 100)
    train_event = rng.random(100) < 0.6
    train_event[np.argmax(train_time)] = True
    train = SurvivalTarget.from_arrays(train_time, train_event)
    test_time = rng.exponential(10.0, 60)
    test_time[0] = train_time.max() + 5.0
    test = SurvivalTarget.from_arrays(test_time, rng.random(60) < 0.6)
    window = evaluation_window(train, test)
    assert window is not None and window.times.size >= 2
    survival = np.full((60, window.times.size), 0.6)
    _, reference_ibs = _torchsurv_brier(survival, window.times, train, test)
    ours = integrated_brier(survival, window.times, train, test)
    assert np.isfinite(ours)
    assert ours == pytest.approx(reference_ibs, abs=WEIGHTED_TOL)
