"""Pure metric and protocol functions of bssl.eval on hand-made features (no images, fast)."""

import numpy as np
import pytest

from bssl.errors import UserError
from bssl.eval.features import Features, check_finite
from bssl.eval.fewshot import fewshot_protocol
from bssl.eval.knn import knn_scores, knn_topk
from bssl.eval.linear import train_linear
from bssl.eval.metrics import average_precision, mean_average_precision, rankme, topk_accuracy, voc_labels
from bssl.eval.svm import svm_protocol


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_average_precision_matches_hand_computed_envelope():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, -1, 1, -1, 1])
    # precision at each recall level 1/3, 2/3, 1 after the right-to-left max: 1, 2/3, 3/5
    expected = (1 / 3) * 1 + (1 / 3) * (2 / 3) + (1 / 3) * (3 / 5)
    assert average_precision(scores, labels) == pytest.approx(expected)
    # a difficult image (label 0) is ignored wherever it ranks
    assert average_precision(np.r_[0.95, scores], np.r_[0, labels]) == pytest.approx(expected)
    # as a negative it would count: the first hit falls to precision 1/2
    assert average_precision(np.r_[0.95, scores], np.r_[-1, labels]) < expected


def test_average_precision_edge_cases():
    assert average_precision([0.1, 0.2], [1, 1]) == pytest.approx(1.0)
    assert average_precision([0.9, 0.1], [-1, 1]) == pytest.approx(0.5)
    assert np.isnan(average_precision([0.3, 0.2], [-1, 0]))
    m, aps = mean_average_precision(np.array([[0.9, 0.1], [0.1, 0.9]]), np.array([[1, -1], [-1, -1]]))
    assert m == pytest.approx(1.0) and np.isnan(aps[1])


def test_voc_labels_marks_difficult_positives_only():
    targets = np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32)
    difficult = np.array([[True, True, False], [False, False, False]])
    assert voc_labels(targets, difficult).tolist() == [[0, -1, 1], [-1, 1, -1]]


def test_topk_accuracy():
    s = np.array([[0.1, 0.5, 0.4], [0.8, 0.1, 0.1]])
    assert topk_accuracy(s, np.array([2, 0]), 1) == 0.5
    assert topk_accuracy(s, np.array([2, 0]), 2) == 1.0


def test_rankme_bounds():
    rng = np.random.default_rng(0)
    iso = rng.normal(size=(2000, 8))
    assert rankme(iso) == pytest.approx(8, rel=0.05)
    collapsed = np.outer(rng.normal(size=500), rng.normal(size=16))
    assert rankme(collapsed) < 1.05


def test_knn_chunked_topk_equals_brute_force():
    rng = np.random.default_rng(1)
    bank, q = rng.normal(size=(300, 12)).astype(np.float32), rng.normal(size=(37, 12)).astype(np.float32)
    s_chunk, i_chunk = knn_topk(bank, q, k=10, query_chunk=8, bank_chunk=41)
    bn = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    ref = np.sort(qn @ bn.T, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(s_chunk, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.take_along_axis(qn @ bn.T, i_chunk, 1), s_chunk, rtol=1e-5, atol=1e-6)


def test_knn_weighted_vote_by_hand():
    bank = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    labels = np.array([0, 1, 1])
    scores = knn_scores(bank, labels, np.array([[1, 0.05]], dtype=np.float32), num_classes=2, k=2, temperature=0.5)
    q = np.array([1, 0.05]) / np.linalg.norm([1, 0.05])
    s0 = q @ np.array([1, 0])
    s1 = q @ (np.array([0.9, 0.1]) / np.linalg.norm([0.9, 0.1]))
    np.testing.assert_allclose(scores[0], [np.exp(s0 / 0.5), np.exp(s1 / 0.5)], rtol=1e-5)


def _blobs(n, num_classes=4, dim=16, seed=0, multilabel=False):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(size=(num_classes, dim)) * 3
    if multilabel:
        targets = (rng.random((n, num_classes)) < 0.35).astype(np.float32)
        targets[targets.sum(1) == 0, 0] = 1
        x = targets @ centres + rng.normal(size=(n, dim))
        difficult = (rng.random((n, num_classes)) < 0.1) & (targets > 0)
        return Features(x.astype(np.float32), targets, [f"c{i}" for i in range(num_classes)], True, difficult)
    y = rng.integers(num_classes, size=n)
    x = centres[y] + rng.normal(size=(n, dim))
    return Features(x.astype(np.float32), y.astype(np.int64), [f"c{i}" for i in range(num_classes)], False)


def test_linear_probe_learns_separable_features():
    tr, te = _blobs(400, seed=0), _blobs(200, seed=1)
    res = train_linear(tr, te, epochs=10, lr=1.0, norm="standardize", batch_size=64)
    assert res["metric"] == "top1" and res["value"] > 0.9
    with pytest.raises(UserError, match="linear_norm"):
        train_linear(tr, te, norm="batch")


def test_svm_and_fewshot_on_multilabel_blobs():
    tr, te = _blobs(300, multilabel=True, seed=2), _blobs(150, multilabel=True, seed=3)
    res = svm_protocol(tr, te, costs=[0.1, 1.0], n_jobs=1)
    assert res["value"] > 0.8
    assert set(res["details"]["per_class_cost"].values()) <= {0.1, 1.0}
    few = fewshot_protocol(tr, te, ks=[1, 4, 10_000], samples=2, costs=[0.1, 1.0], n_jobs=1)
    per_k = few["details"]["per_k"]
    assert set(per_k) == {"1", "4"} and "10000" in few["details"]["skipped"]
    assert len(per_k["4"]["mAP_samples"]) == 2 and per_k["4"]["mAP_mean"] > 0.5
    # "test" selection reports the best cost per k, with every cost's mean kept
    assert per_k["4"]["mAP_mean"] == pytest.approx(max(per_k["4"]["mAP_mean_per_cost"].values()))
    for selection in ("full", "cv"):
        other = fewshot_protocol(tr, te, ks=[1, 4], samples=2, costs=[0.1, 1.0], n_jobs=1, cost_selection=selection)
        assert other["details"]["per_k"]["4"]["mAP_mean"] > 0.5
    # the same seed draws the same samples
    again = fewshot_protocol(tr, te, ks=[1, 4], samples=2, costs=[0.1, 1.0], n_jobs=1)
    assert again["details"]["per_k"]["4"]["mAP_samples"] == per_k["4"]["mAP_samples"]
    with pytest.raises(UserError, match="fewshot_k"):
        fewshot_protocol(tr, te, ks=[10_000], samples=1, n_jobs=1)


def test_svm_single_label_reports_accuracy():
    tr, te = _blobs(200, seed=4), _blobs(100, seed=5)
    res = svm_protocol(tr, te, costs=[1.0], n_jobs=1)
    assert res["details"]["accuracy"] > 0.9


def test_nan_features_are_a_user_error():
    x = np.ones((5, 3), dtype=np.float32)
    x[2, 1] = np.nan
    with pytest.raises(UserError, match="NaN"):
        check_finite(x, "shapes/train")


def test_parallel_svm_fits_equal_sequential_ones_exactly():
    """LIBLINEAR's dual solver shuffles with one process-wide generator: fits on parallel threads drew from each
    other's streams (coefficients moved by ~3e-3 between runs), fits in worker processes do not."""
    from joblib import delayed

    from bssl.eval.svm import make_svc, run_parallel

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 64))
    y = np.where(rng.random(1500) < 0.3, 1, -1)

    def fit(seed):
        return make_svc(1.0, seed).fit(x, y).coef_

    sequential = run_parallel(1, (delayed(fit)(s) for s in range(6)))
    for _ in range(2):
        parallel = run_parallel(2, (delayed(fit)(s) for s in range(6)))
        assert all(np.array_equal(a, b) for a, b in zip(sequential, parallel))
