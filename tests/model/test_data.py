import numpy as np
import pytest

from model.data import ResumableSampler


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
