import pytest

from train.review.active import choose

ROWS = [{"ct_id": f"CT{i}", "score": s, "reasons": ["size_mismatch"] if s else []}
        for i, s in enumerate([0.0, 2.5, 1.0, 2.5, 0.5, 0.0])]


def test_disagreement_takes_the_largest_scores_ties_by_ct_id():
    assert [c["ct_id"] for c in choose(ROWS, 3, "disagreement")] == ["CT1", "CT3", "CT2"]
    assert [c["rank"] for c in choose(ROWS, 3, "disagreement")] == [1, 2, 3]
    assert [c["ct_id"] for c in choose(ROWS, 2, "disagreement", exclude={"CT1"})] == ["CT3", "CT2"]
    assert len(choose(ROWS, 50, "disagreement")) == 6


def test_random_is_seeded_never_repeats_and_ignores_the_row_order():
    a = choose(ROWS, 4, "random", seed=3)
    assert a == choose(list(reversed(ROWS)), 4, "random", seed=3)
    assert len({c["ct_id"] for c in a}) == 4
    assert {c["ct_id"] for c in choose(ROWS, 6, "random", seed=1, exclude={"CT0", "CT1"})} == {"CT2", "CT3", "CT4",
                                                                                             "CT5"}
    draws = {tuple(c["ct_id"] for c in choose(ROWS, 2, "random", seed=s)) for s in range(10)}
    assert len(draws) > 3


def test_an_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="strategy 'best'"):
        choose(ROWS, 1, "best")
