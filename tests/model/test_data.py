import numpy as np
import pytest

from model.data import Mixture, ResumableSampler


def epoch_indices(n, world, micro, seed):
    samplers = [ResumableSampler(n, world, r, micro, seed) for r in range(world)]
    steps = samplers[0].batches_per_epoch
    return [np.concatenate([s.next() for _ in range(steps)]) for s in samplers]


@pytest.mark.parametrize(("n", "world", "micro"), [(100, 2, 8), (97, 3, 4), (16, 1, 16)])
def test_no_sequence_twice_in_an_epoch_across_ranks(n, world, micro):
    per_rank = epoch_indices(n, world, micro, seed=3)
    everything = np.concatenate(per_rank)
    assert len(np.unique(everything)) == len(everything)
    assert len(everything) == n // (world * micro) * world * micro


def test_resume_continues_with_exactly_the_next_batch():
    a = ResumableSampler(50, 2, 1, 4, seed=7)
    for _ in range(9):  # past an epoch boundary (6 batches per epoch)
        a.next()
    b = ResumableSampler(50, 2, 1, 4, seed=7)
    b.load_state_dict(a.state_dict())
    for _ in range(10):
        assert np.array_equal(a.next(), b.next())


def test_epochs_are_reshuffled_and_seeded():
    s = ResumableSampler(40, 1, 0, 10, seed=1)
    first = np.concatenate([s.next() for _ in range(4)])
    second = np.concatenate([s.next() for _ in range(4)])
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)
    assert np.array_equal(first, np.concatenate(epoch_indices(40, 1, 10, seed=1)))


def test_changed_shards_are_refused():
    s = ResumableSampler(40, 1, 0, 10, seed=1)
    with pytest.raises(ValueError, match="token shards changed"):
        ResumableSampler(41, 1, 0, 10, seed=1).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableSampler(5, 2, 0, 4, seed=1)


def mixture(weights: dict[str, float]) -> Mixture:
    """1,000 sequences: 700 en, 250 zh, 40 ja and 10 sw."""
    names = ["en", "zh", "ja", "sw"]
    groups = np.repeat(np.arange(4), [700, 250, 40, 10])
    groups = groups[np.random.default_rng(0).permutation(len(groups))]  # interleaved
    return Mixture(names, groups, np.array([weights.get(n, weights.get("*", 0.0)) for n in names]))


def test_a_mixture_gives_the_requested_shares_and_upsamples_small_groups():
    mix = mixture({"en": 0.5, "zh": 0.3, "*": 0.2})  # ja and sw share "*": 0.2 each
    world, micro = 2, 10
    samplers = [ResumableSampler(1000, world, r, micro, 5, mix) for r in range(world)]
    drawn = np.concatenate([s.next() for _ in range(50) for s in samplers])  # one epoch
    shares = np.bincount(mix.groups[drawn], minlength=4) / len(drawn)
    # "*" is each unnamed group's weight: 0.5, 0.3, 0.2, 0.2 over a total of 1.2.
    assert shares == pytest.approx(np.array([0.5, 0.3, 0.2, 0.2]) / 1.2, abs=0.01)
    summary = mix.summary()
    assert summary["sw"]["passes"] > 16 and summary["en"]["passes"] < 1
    assert sum(s["drawn"] for s in summary.values()) == 1000
    # Every sw sequence is drawn, each as often as the others give or take one.
    sw = np.bincount(drawn[mix.groups[drawn] == 3], minlength=1000)[mix.groups == 3]
    assert sw.max() - sw.min() <= 1
    # The next epoch draws again, in another order.
    again = np.concatenate([s.next() for _ in range(50) for s in samplers])
    assert not np.array_equal(again, drawn)
    assert np.array_equal(np.bincount(mix.groups[again], minlength=4),
                          np.bincount(mix.groups[drawn], minlength=4))  # fmt: skip


def test_a_mixture_resumes_exactly_and_is_checked():
    mix = mixture({"en": 1, "ja": 1})
    a = ResumableSampler(1000, 2, 0, 8, seed=9, mixture=mix)
    for _ in range(70):  # past the first epoch (62 batches)
        a.next()
    b = ResumableSampler(1000, 2, 0, 8, seed=9, mixture=mix)
    b.load_state_dict(a.state_dict())
    for _ in range(80):
        assert np.array_equal(a.next(), b.next())
    other = ResumableSampler(1000, 2, 0, 8, seed=9, mixture=mixture({"en": 1}))
    with pytest.raises(ValueError, match=r"another pretrain\.mixture"):
        other.load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="no item has a weight"):
        mixture({"xx": 1.0}).draws()
