"""fastgrad.data: mini-batch iteration and sampling."""
import numpy as np
import pytest

from fastgrad.data import iterate_minibatches, sample_batch


def dataset(n=103, d=3):
    # row i of X is (i, 2i, 3i...) and y[i] = i: a batch's rows can be checked
    # against its labels
    X = np.arange(n, dtype=float)[:, None] * np.arange(1, d + 1)
    y = np.arange(n)
    return X, y


def assert_rows_match(Xb, yb):
    np.testing.assert_array_equal(Xb[:, 0], yb)
    np.testing.assert_array_equal(Xb, yb[:, None] * np.arange(1, Xb.shape[1] + 1))


@pytest.mark.parametrize("n,bs", [(103, 10), (100, 10), (5, 256), (1, 1), (256, 256), (257, 256)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_sample_exactly_once_per_epoch(n, bs, shuffle):
    X, y = dataset(n)
    batches = iterate_minibatches(X, y, bs, shuffle=shuffle, rng=0)
    seen = []
    sizes = []
    for Xb, yb in batches:
        assert_rows_match(Xb, yb)
        seen.extend(yb.tolist())
        sizes.append(len(yb))
    assert sorted(seen) == list(range(n))
    assert len(batches) == len(sizes) == -(-n // bs)
    assert all(s == bs for s in sizes[:-1]) and 1 <= sizes[-1] <= bs


@pytest.mark.parametrize("n,bs", [(103, 10), (100, 10), (5, 256), (257, 256)])
def test_drop_last(n, bs):
    X, y = dataset(n)
    batches = iterate_minibatches(X, y, bs, drop_last=True, rng=1)
    got = [yb for _, yb in batches]
    assert len(got) == len(batches) == n // bs
    assert all(len(b) == bs for b in got)
    flat = np.concatenate(got) if got else np.array([], dtype=int)
    assert len(set(flat.tolist())) == len(flat) == (n // bs) * bs


def test_default_batch_size_is_256():
    X, y = dataset(600)
    sizes = [len(yb) for _, yb in iterate_minibatches(X, y, rng=0)]
    assert sizes == [256, 256, 88]


def test_seed_reproducible_and_epochs_differ():
    X, y = dataset(50)
    a = [yb.tolist() for _, yb in iterate_minibatches(X, y, 8, rng=42)]
    b = [yb.tolist() for _, yb in iterate_minibatches(X, y, 8, rng=42)]
    c = [yb.tolist() for _, yb in iterate_minibatches(X, y, 8, rng=43)]
    assert a == b
    assert a != c
    assert sum(a, []) != list(range(50))             # actually shuffled
    # one Generator drives successive epochs: a new permutation each time,
    # reproducible from the generator's seed
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    e1 = [yb.tolist() for _, yb in iterate_minibatches(X, y, 8, rng=g1)]
    e2 = [yb.tolist() for _, yb in iterate_minibatches(X, y, 8, rng=g1)]
    assert e1 != e2
    assert e1 == [yb.tolist() for _, yb in iterate_minibatches(X, y, 8, rng=g2)]
    # re-iterating the same object is a new epoch too
    batches = iterate_minibatches(X, y, 8, rng=7)
    first = [yb.tolist() for _, yb in batches]
    second = [yb.tolist() for _, yb in batches]
    assert first != second and sorted(sum(second, [])) == list(range(50))


def test_no_shuffle_keeps_order_and_ignores_rng():
    X, y = dataset(7)
    got = [yb.tolist() for _, yb in iterate_minibatches(X, y, 3, shuffle=False)]
    assert got == [[0, 1, 2], [3, 4, 5], [6]]


def test_accepts_lists_and_multidim_targets():
    X = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    y = np.array([[1, 0], [0, 1], [1, 1]])
    out = list(iterate_minibatches(X, y, 2, shuffle=False))
    assert out[0][0].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert out[1][1].tolist() == [[1, 1]]


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
    (dict(batch_size=-3), ValueError, "batch_size"),
    (dict(batch_size=2.5), TypeError, "batch_size must be an int"),
    (dict(batch_size=True), TypeError, "batch_size"),
    (dict(rng="seed"), TypeError, "rng"),
    (dict(rng=-1), ValueError, "seed"),
    (dict(rng=np.random.RandomState(0)), TypeError, "rng"),
    (dict(shuffle="yes"), TypeError, "shuffle"),
    (dict(drop_last=None), TypeError, "drop_last"),
])
def test_iterate_bad_arguments_fail_at_call_time(kw, exc, msg):
    X, y = dataset(10)
    with pytest.raises(exc, match=msg):
        iterate_minibatches(X, y, **kw)        # not deferred to the first next()


def test_mismatched_or_empty_data():
    X, y = dataset(10)
    with pytest.raises(ValueError, match="X has 10 samples but y has 9"):
        iterate_minibatches(X, y[:9])
    with pytest.raises(ValueError, match="X has 10 samples but y has 9"):
        sample_batch(X, y[:9], 2)
    with pytest.raises(ValueError, match="empty"):
        iterate_minibatches(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match="sample axis"):
        iterate_minibatches(np.float64(3.0), np.zeros(1))


def test_sample_batch():
    X, y = dataset(40)
    Xb, yb = sample_batch(X, y, 10, rng=np.random.default_rng(0))
    assert Xb.shape == (10, 3) and yb.shape == (10,)
    assert_rows_match(Xb, yb)
    assert len(set(yb.tolist())) == 10                 # without replacement
    again = sample_batch(X, y, 10, rng=np.random.default_rng(0))[1]
    np.testing.assert_array_equal(yb, again)
    np.testing.assert_array_equal(yb, sample_batch(X, y, 10, rng=0)[1])
    full = sample_batch(X, y, 40, rng=3)[1]
    assert sorted(full.tolist()) == list(range(40))
    # each sample is roughly equally likely (coarse check, 2000 draws of 10)
    g = np.random.default_rng(11)
    counts = np.bincount(np.concatenate([sample_batch(X, y, 10, rng=g)[1] for _ in range(2000)]),
                         minlength=40)
    assert counts.min() > 350 and counts.max() < 650    # expected 500 each


@pytest.mark.parametrize("bs,exc,msg", [
    (0, ValueError, "batch_size must be >= 1"),
    (41, ValueError, "batch_size 41 is larger than the 40 samples"),
    (None, TypeError, "batch_size"),
])
def test_sample_batch_bad_size(bs, exc, msg):
    X, y = dataset(40)
    with pytest.raises(exc, match=msg):
        sample_batch(X, y, bs, rng=0)


def test_docstring_examples_run():
    import doctest

    import fastgrad.data
    res = doctest.testmod(fastgrad.data)
    assert res.attempted >= 5 and res.failed == 0
