"""scikit-learn's own estimator checks (``sklearn.utils.estimator_checks``) on every model.

Each model runs with a tiny budget (a few optimiser steps, networks a few units wide, the CPU)
on expression input: the checks test the estimator contract (parameters, tags, input
validation and its messages, fitted state, pickling, determinism), not the quality of a map.
Most of the time here is numba compiling umap-learn once for N2D.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import parametrize_with_checks

import manifex as mx

CPU = {"device": "cpu", "progress": False, "random_state": 0}


def _dlme() -> mx.models.DLME:
    return mx.models.DLME(
        n_neighbors=5, encoder_dims=(8, 4), projector_dims=(8,), batch_size=16, n_steps=5, **CPU
    )


def _tsimcne() -> mx.models.TSimCNE:
    return mx.models.TSimCNE(
        n_neighbors=5,
        mlp_dims=(8,),
        pretrain_dim=4,
        head_hidden=8,
        batch_size=16,
        n_epochs=(1, 1, 1),
        amp=False,
        **CPU,
    )


def _n2d() -> mx.models.N2D:
    return mx.models.N2D(
        n_clusters=2, n_neighbors=5, hidden_dims=(8,), n_steps=5, gmm_n_init=1, map_2d=False, **CPU
    )


#: why a check fails, by model class; nothing else may fail
_UMAP_TRANSFORM = (
    "UMAP.transform places the query cells jointly: its negative sampling draws from one random "
    "stream over the whole batch, and its edge pruning and epoch count depend on the batch, so a cell's "
    "position depends on the other cells transformed with it; the autoencoder code is invariant "
    "(test_n2d_code_is_batch_invariant)"
)
_SPARSE_PROBA = (
    "the check reads `classifier_tags.multi_class` of any estimator with predict_proba, and a "
    "clusterer has no classifier tags (AttributeError inside the check); fit, predict and "
    "predict_proba on every sparse format are tested in test_n2d_sparse_formats"
)
EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "DLME": {},
    "TSimCNE": {},
    "N2D": {
        "check_methods_subset_invariance": _UMAP_TRANSFORM,
        "check_methods_sample_order_invariance": _UMAP_TRANSFORM,
        "check_estimator_sparse_array": _SPARSE_PROBA,
        "check_estimator_sparse_matrix": _SPARSE_PROBA,
    },
}


def _expected_failures(estimator) -> dict[str, str]:
    return EXPECTED_FAILURES[type(estimator).__name__]


@parametrize_with_checks([_dlme(), _tsimcne(), _n2d()], expected_failed_checks=_expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # umap-learn / numba chatter on tiny inputs
        check(estimator)


def test_tags():
    for model in (_dlme(), _tsimcne(), _n2d()):
        tags = get_tags(model)
        assert tags.input_tags.sparse and not tags.input_tags.allow_nan
        assert tags.transformer_tags.preserves_dtype == ["float32"]
        assert not tags.non_deterministic and tags.requires_fit
    assert get_tags(_n2d()).estimator_type == "clusterer"
    assert get_tags(_tsimcne()).input_tags.three_d_array  # images
    assert not get_tags(_dlme()).input_tags.three_d_array


@pytest.mark.parametrize("make", [_dlme, _tsimcne, _n2d])
def test_float_outputs(make):
    x = np.random.default_rng(0).normal(size=(30, 4))
    model = make()
    assert model.fit_transform(x).dtype == np.float32  # float64 in, float32 out (the tag says so)
    assert model.transform(x.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize("make", [_dlme, _tsimcne, _n2d])
def test_init_stores_parameters_as_given(make):
    model = make().set_params(n_neighbors=[1], random_state="x")  # no validation before fit
    assert model.get_params()["n_neighbors"] == [1]
    with pytest.raises((TypeError, ValueError)):
        model.fit(np.zeros((30, 4)))
    dims = {"DLME": "encoder_dims", "TSimCNE": "mlp_dims", "N2D": "hidden_dims"}[type(model).__name__]
    model = make().set_params(**{dims: 3})
    with pytest.raises(ValueError, match=f"`{dims}` must be a non-empty sequence"):
        model.fit(np.zeros((30, 4)))


def test_list_and_tuple_parameters_give_the_same_model():
    x = np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32)
    a = _dlme().fit_transform(x)
    b = _dlme().set_params(encoder_dims=[8, 4], projector_dims=np.array([8])).fit_transform(x)
    np.testing.assert_array_equal(a, b)
    m = _tsimcne().set_params(n_epochs=[1, 1, 1])
    assert m.epochs == (1, 1, 1)


def test_sklearn_wording_of_input_errors():
    model = _dlme().fit(np.random.default_rng(0).normal(size=(20, 3)))
    with pytest.raises(ValueError, match=r"X has 2 features, but DLME is expecting 3 features as input"):
        model.transform(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="Reshape your data"):
        model.transform(np.zeros(3))
    with pytest.raises(ValueError, match="Complex data not supported"):
        _dlme().fit(np.ones((20, 3), dtype=complex))
    with pytest.raises(ValueError, match=r"0 feature\(s\) \(shape=\(12, 0\)\) while a minimum of 1"):
        _dlme().fit(np.zeros((12, 0)))
    with pytest.raises(ValueError, match="1 sample"):
        _dlme().fit(np.zeros((1, 3)))
    with pytest.raises(TypeError, match=r"must hold numbers.*argument must be a string or a"):
        _dlme().fit(np.array([[{"a": 1}, 1.0]] * 20, dtype=object))
    # an object array of numbers is read as numbers, as by sklearn.utils.check_array
    x = np.random.default_rng(0).normal(size=(20, 3))
    np.testing.assert_array_equal(_dlme().fit_transform(x.astype(object)), _dlme().fit_transform(x))


def test_n2d_clusterer():
    x = np.random.default_rng(0).normal(size=(40, 3))
    model = _n2d()
    labels = model.fit_predict(x)
    np.testing.assert_array_equal(labels, model.labels_)
    assert model.predict(x).shape == (40,)
    one = _n2d().set_params(n_clusters=1).fit(x)  # a single cluster is a valid (trivial) request
    assert set(one.labels_.tolist()) == {0}


def test_n2d_sparse_formats():
    """What check_estimator_sparse_array / _matrix test, without their classifier assumption."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(40, 3))
    x[x < 0.6] = 0
    dense = clone(_n2d()).fit(x)
    want = dense.predict(x), dense.predict_proba(x)
    for fmt in ("csr", "csc", "coo", "dok", "lil", "dia", "bsr"):
        for container in (sp.csr_matrix, sp.csr_array):
            xs = container(x).asformat(fmt)
            model = clone(_n2d()).fit(xs)
            np.testing.assert_array_equal(model.labels_, dense.labels_)
            np.testing.assert_array_equal(model.predict(xs), want[0])
            np.testing.assert_array_equal(model.predict_proba(xs), want[1])
    big = sp.csr_matrix(x)
    big.indices, big.indptr = big.indices.astype(np.int64), big.indptr.astype(np.int64)
    np.testing.assert_array_equal(clone(_n2d()).fit(big).labels_, dense.labels_)


def test_n2d_code_is_batch_invariant():
    """The reason N2D's subset / order invariance checks fail lies in UMAP.transform alone."""
    x = np.random.default_rng(0).normal(size=(40, 3))
    model = _n2d().fit(x)
    full = model.transform(x, space="latent")
    np.testing.assert_array_equal(model.transform(x[:7], space="latent"), full[:7])
    order = np.random.default_rng(1).permutation(40)
    np.testing.assert_array_equal(model.transform(x[order], space="latent"), full[order])
