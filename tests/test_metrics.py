"""Metrics against closed forms, identities and direct NumPy/SciPy computations (CPU, seconds)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from coopnets.errors import UserError
from coopnets.metrics import (fid, fid_from_stats, inception_score, kid, load_stats, mmd2_unbiased,
                              pairwise_ssim, parzen_log_likelihood, parzen_score, psnr,
                              recovery_error, save_stats, select_bandwidth, ssim)
from coopnets.metrics.features import reference_stats
from coopnets.metrics.inception import inception_path, preprocess
from coopnets.metrics.inception_score import classifier_logits

SHARED = Path(os.environ.get("COOPNETS_SHARED") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def fid_scipy(a, b):
    """Reference FID the usual way: scipy.linalg.sqrtm of the covariance product."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


# ---------------------------------------------------------------- FID

def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 16))
    assert abs(fid(x, x)) < 1e-8


def test_fid_closed_form_for_commuting_gaussians_and_rotation_invariance():
    rng = np.random.default_rng(1)
    d = 6
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert fid_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))  # rotate both: the distance must not change
    got = fid_from_stats(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-8)


def test_fid_matches_scipy_sqrtm_on_random_features():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(400, 20))
    b = rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20)) * 0.3 + 0.5
    assert fid(a, b) == pytest.approx(fid_scipy(a, b), rel=1e-7)
    assert fid(torch.from_numpy(a), b) == pytest.approx(fid(a, b), rel=1e-12)


def test_fid_with_singular_covariances_is_finite_and_consistent():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(10, 64)), rng.normal(size=(12, 64)) + 0.1  # fewer samples than dims
    v = fid(a, b)
    assert np.isfinite(v) and v > 0
    assert abs(fid(a, a)) < 1e-8
    # agrees with the sqrtm route after the customary eps*I regularisation
    eps = 1e-6 * np.eye(64)
    s1, s2 = np.cov(a, rowvar=False) + eps, np.cov(b, rowvar=False) + eps
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert v == pytest.approx(ref, rel=1e-3)


def test_fid_bad_inputs():
    x = np.zeros((5, 3))
    with pytest.raises(UserError, match="NaN"):
        fid(np.full((5, 3), np.nan), x)
    with pytest.raises(UserError, match="dimensions"):
        fid(x, np.zeros((5, 4)))
    with pytest.raises(UserError, match="2-D"):
        fid(np.zeros(5), x)
    with pytest.raises(UserError, match="match"):
        fid_from_stats(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_stats_roundtrip(tmp_path):
    rng = np.random.default_rng(4)
    mu, sigma = rng.normal(size=4), np.cov(rng.normal(size=(20, 4)), rowvar=False)
    p = save_stats(tmp_path / "s.npz", mu, sigma, 20, "abc", "ext")
    st = load_stats(p)
    assert np.array_equal(st["mu"], mu) and np.array_equal(st["sigma"], sigma)
    assert (st["count"], st["source_hash"], st["extractor"]) == (20, "abc", "ext")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(UserError, match="not a statistics file"):
        load_stats(tmp_path / "other.npz")


def test_reference_stats_cache_is_keyed_by_pixels(tmp_path):
    calls = []

    def feats(x):
        calls.append(len(x))
        return x.float().flatten(1).numpy()[:, :8]

    imgs = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    st1 = reference_stats(imgs, "toy", feats, cache_dir=tmp_path)
    st2 = reference_stats(imgs.clone(), "toy", feats, cache_dir=tmp_path)
    assert calls == [10] and np.allclose(st1["mu"], st2["mu"]) and np.allclose(st1["features"], st2["features"])
    other = imgs.clone()
    other[0, 0, 0, 0] ^= 1
    reference_stats(other, "toy", feats, cache_dir=tmp_path)  # one pixel differs: recomputed
    reference_stats(imgs, "toy-v2", feats, cache_dir=tmp_path)  # another extractor: recomputed
    assert calls == [10, 10, 10]


# ---------------------------------------------------------------- KID

def mmd2_direct(x, y):
    """Unbiased MMD^2 written out as sums over index pairs."""
    k = lambda u, v: (u @ v / len(u) + 1) ** 3  # noqa: E731
    m = len(x)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return sxx / (m * (m - 1)) + syy / (m * (m - 1)) - 2 * sxy / m**2


def test_kid_matches_direct_computation():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(15, 4)), rng.normal(size=(15, 4)) + 0.3
    assert mmd2_unbiased(x, y) == pytest.approx(mmd2_direct(x, y), rel=1e-10)
    # one subset as large as the sets is a permutation of them: the full-set estimate
    mean, se = kid(x, y, subsets=1, subset_size=100)
    assert mean == pytest.approx(mmd2_direct(x, y), rel=1e-10) and np.isnan(se)


def test_kid_is_unbiased_on_equal_distributions():
    rng = np.random.default_rng(6)
    vals = [mmd2_unbiased(rng.normal(size=(40, 5)), rng.normal(size=(40, 5))) for _ in range(300)]
    se = np.std(vals, ddof=1) / np.sqrt(len(vals))
    assert abs(np.mean(vals)) < 3 * se
    a, b = rng.normal(size=(800, 5)), rng.normal(size=(800, 5))
    mean, se = kid(a, b, subsets=50, subset_size=200)
    assert abs(mean) < 3 * se
    mean_shift, se_shift = kid(a, b + 0.5, subsets=50, subset_size=200)
    assert mean_shift > 10 * se_shift  # and it does detect a difference


# ---------------------------------------------------------------- Parzen

def test_parzen_matches_direct_logsumexp_in_any_batching():
    rng = np.random.default_rng(7)
    s, x = rng.uniform(size=(53, 12)), rng.uniform(size=(17, 12))
    sigma = 0.3
    d2 = ((x[:, None, :] - s[None]) ** 2).sum(-1)
    expected = logsumexp(-d2 / (2 * sigma**2), axis=1) - np.log(53) - 6 * np.log(2 * np.pi * sigma**2)
    for bs in (1, 7, 1000):
        assert np.allclose(parzen_log_likelihood(s, x, sigma, batch_size=bs), expected, rtol=0, atol=1e-9)
    # uint8 images are divided by 255 and flattened
    u8 = rng.integers(0, 256, size=(5, 1, 3, 4), dtype=np.uint8)
    assert np.allclose(parzen_log_likelihood(u8, u8[:2], 0.2),
                       parzen_log_likelihood(u8 / 255.0, u8[:2] / 255.0, 0.2))


def test_parzen_approaches_the_smoothed_gaussian_density():
    rng = np.random.default_rng(8)
    d, h = 2, 0.5
    samples, test = rng.normal(size=(20000, d)), rng.normal(size=(300, d))
    analytic = multivariate_normal(np.zeros(d), (1 + h**2) * np.eye(d)).logpdf(test)
    few = np.abs(parzen_log_likelihood(samples[:200], test, h, pixels=False) - analytic).mean()
    many = np.abs(parzen_log_likelihood(samples, test, h, pixels=False) - analytic).mean()
    assert many < 0.03 and many < few


def test_bandwidth_selection_and_score():
    rng = np.random.default_rng(9)
    samples, val, test = rng.normal(size=(2000, 3)), rng.normal(size=(300, 3)), rng.normal(size=(200, 3))
    sigmas = [0.05, 0.3, 3.0]
    best, scores = select_bandwidth(samples, val, sigmas, return_scores=True, pixels=False)
    direct = [parzen_log_likelihood(samples, val, s, pixels=False).mean() for s in sigmas]
    assert np.allclose(scores, direct) and best == 0.3  # tiny and huge kernels both fit worse
    r = parzen_score(samples, val, test, sigmas, pixels=False)
    ll = parzen_log_likelihood(samples, test, 0.3, pixels=False)
    assert r["sigma"] == 0.3 and r["mean"] == pytest.approx(ll.mean())
    assert r["std_error"] == pytest.approx(ll.std(ddof=1) / np.sqrt(200))
    with pytest.raises(UserError, match="same size"):
        parzen_log_likelihood(samples, rng.normal(size=(3, 4)), 0.3, pixels=False)
    with pytest.raises(UserError, match=r"must lie in \[0, 1\]"):
        parzen_score(samples, val, test, sigmas)  # as images, these vectors are out of range


def test_metrics_refuse_network_range_floats():
    """One pixel convention at the metric boundary: uint8 or [0, 1] floats. A [-1, 1] array used
    to give a wrong but finite PSNR; now it is one clear error, and [0, 1] floats agree with uint8."""
    from coopnets.metrics.pixels import unit_pixels
    u8 = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    other = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert psnr(u8, other) == pytest.approx(psnr(u8.double() / 255, other.double() / 255))
    for metric in (psnr, ssim):
        with pytest.raises(UserError, match=r"\[-1, 1\].*to_unit"):
            metric(u8.float() / 127.5 - 1, other.float() / 127.5 - 1)
    assert psnr(u8.double(), other.double(), data_range=255) == pytest.approx(psnr(u8, other))
    with pytest.raises(UserError, match=r"must lie in \[0, 1\], got values in \[0, 1.5\]"):
        unit_pixels(torch.tensor([[0.0, 1.5]]))


# ---------------------------------------------------------------- PSNR / SSIM / recovery

def test_psnr_formula_and_layouts():
    a = np.zeros((2, 1, 8, 8))
    b = a.copy()
    b[0] += 0.1  # MSE 0.01 -> 20 dB
    b[1] += 0.01  # MSE 1e-4 -> 40 dB
    assert np.allclose(psnr(a, b, reduction="none"), [20.0, 40.0])
    assert psnr(a, b) == pytest.approx(30.0)
    assert psnr(np.zeros((8, 8)), np.full((8, 8), 25.5), data_range=255.0) == pytest.approx(20.0)
    assert psnr(torch.zeros(8, 8, 3), torch.zeros(8, 8, 3)) == np.inf
    with pytest.raises(UserError, match="different shapes"):
        psnr(np.zeros((1, 1, 8, 8)), np.zeros((1, 3, 8, 8)))


def test_ssim_identity_and_agreement_with_skimage():
    skm = pytest.importorskip("skimage.metrics", reason="scikit-image is the SSIM reference")
    rng = np.random.default_rng(10)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)
    x = rng.uniform(size=(32, 40))
    y = np.clip(x + rng.normal(scale=0.2, size=x.shape), 0, 1)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert abs(ssim(x, y) - skm.structural_similarity(x, y, **kw)) < 1e-4
    xc, yc = rng.uniform(size=(28, 28, 3)), rng.uniform(size=(28, 28, 3))
    assert abs(ssim(xc, yc) - skm.structural_similarity(xc, yc, channel_axis=2, **kw)) < 1e-4
    xb = rng.uniform(size=(3, 3, 20, 24))
    yb = np.clip(xb + rng.normal(scale=0.1, size=xb.shape), 0, 1)
    want = [skm.structural_similarity(p, q, channel_axis=0, **kw) for p, q in zip(xb, yb)]
    assert np.allclose(ssim(xb, yb, reduction="none"), want, atol=1e-4)
    u8 = (xb * 255).astype(np.uint8)
    assert ssim(u8, u8) == pytest.approx(1.0)
    with pytest.raises(UserError, match="at least 11x11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))


def test_recovery_error_counts_only_occluded_pixels():
    orig = np.full((2, 3, 10, 10), 0.5)
    rec = orig + 0.5  # observed pixels are off by 0.5 ...
    mask = np.ones((10, 10))
    mask[2:6, 3:8] = 0
    rec[..., 2:6, 3:8] = 0.3  # ... occluded ones by 0.2
    assert recovery_error(orig, rec, mask) == pytest.approx(0.2)
    as_torch = [torch.from_numpy(v) for v in (orig, rec, mask == 1)]  # a boolean mask works too
    assert recovery_error(*as_torch) == pytest.approx(0.2)
    with pytest.raises(UserError, match="occludes nothing"):
        recovery_error(orig, rec, np.ones((10, 10)))


def test_pairwise_ssim_diversity():
    rng = np.random.default_rng(11)
    same = np.repeat(rng.uniform(size=(1, 1, 16, 16)), 5, axis=0)
    assert pairwise_ssim(same) == pytest.approx(1.0)
    noise = rng.uniform(size=(16, 1, 16, 16))
    full = pairwise_ssim(noise)  # 120 pairs, all used
    i, j = np.triu_indices(16, 1)
    assert full == pytest.approx(np.mean([ssim(noise[a:a + 1], noise[b:b + 1]) for a, b in zip(i, j)]))
    part = pairwise_ssim(noise, max_pairs=60, seed=3)
    assert part == pairwise_ssim(noise, max_pairs=60, seed=3) and abs(part - full) < 0.05
    assert full < 0.2


# ---------------------------------------------------------------- Inception Score

def test_inception_score_closed_forms():
    assert inception_score(np.full((100, 7), 1 / 7), splits=10) == pytest.approx((1.0, 0.0))
    k = 5
    onehot = np.eye(k)[np.arange(100) % k]
    mean, std = inception_score(onehot, splits=4)
    assert mean == pytest.approx(k) and std == pytest.approx(0.0, abs=1e-12)
    mean, _ = inception_score(onehot * 50.0, splits=4)  # confident logits: softmax ~ one-hot
    assert mean == pytest.approx(k, rel=1e-6)
    mixed = np.vstack([onehot[:50], np.full((50, k), 1 / k)])  # half confident, half uniform
    assert 1 < inception_score(mixed, splits=1)[0] < k
    with pytest.raises(UserError, match="NaN"):
        inception_score(np.full((4, 3), np.nan))
    with pytest.raises(UserError, match="splits"):
        inception_score(onehot, splits=1000)


def test_inception_score_with_a_tiny_stand_in_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    imgs = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8)
    logits = classifier_logits(imgs, net, batch_size=7, progress=False)
    with torch.no_grad():
        direct = net(imgs.float() / 127.5 - 1).double().numpy()
    assert np.allclose(logits, direct, atol=1e-5)
    p = torch.softmax(torch.from_numpy(direct), 1).numpy()
    py = p.mean(0)
    expected = np.exp((p * (np.log(p) - np.log(py))).sum(1).mean())
    assert inception_score(logits, splits=1)[0] == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- Inception features

def test_inception_preprocess_convention():
    u8 = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    x = preprocess(u8)
    assert x.shape == (2, 3, 299, 299) and torch.equal(x[:, 0], x[:, 2])
    assert x.min() >= -1.0 and x.max() <= 127 / 128 + 1e-6
    assert torch.allclose(preprocess(u8.float() / 255), x, atol=1e-4)  # [0, 1] floats: same
    full = torch.full((1, 3, 299, 299), 128, dtype=torch.uint8)
    assert torch.equal(preprocess(full), torch.zeros(1, 3, 299, 299))  # (x - 128) / 128, no resize


def test_missing_inception_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("COOPNETS_INCEPTION", str(tmp_path / "nope.pt"))
    with pytest.raises(UserError, match="COOPNETS_INCEPTION"):
        inception_path()
    with pytest.raises(UserError, match="--inception"):
        inception_path(tmp_path / "missing.pt")
    monkeypatch.delenv("COOPNETS_INCEPTION")
    monkeypatch.chdir(tmp_path)  # the installed package never looks beside a checkout
    with pytest.raises(UserError, match="no Inception weights given.*downloads nothing"):
        inception_path()


@pytest.mark.slow
def test_real_inception_features():
    p = SHARED / "inception" / "pt_inception-2015-12-05.torchscript.pt"
    if not p.is_file():
        pytest.skip(f"Inception TorchScript not found at {p} (shared data absent)")
    from coopnets.metrics import inception_features
    imgs = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    f = inception_features(imgs, path=p, batch_size=2, progress=False)
    assert f.shape == (2, 2048) and np.isfinite(f).all() and (f >= 0).all()  # pool3 follows a ReLU
    g = inception_features(imgs[1:2], path=p, progress=False)
    assert np.allclose(f[1], g[0], rtol=1e-4, atol=1e-5)  # batching does not change features


# ---------------------------------------------------------------- MNIST classifier

def test_shipped_mnist_classifier():
    from coopnets.metrics.mnist_classifier import DEFAULT_WEIGHTS, classifier_meta, mnist_features, mnist_fid
    assert DEFAULT_WEIGHTS.is_file() and DEFAULT_WEIGHTS.stat().st_size < 400_000
    assert classifier_meta()["test_accuracy"] >= 0.99
    x = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    f = mnist_features(x)
    assert f.shape == (20, 128) and np.isfinite(f).all()
    assert np.allclose(mnist_features(x.float() / 255), f, atol=1e-5)  # [0, 1] floats: same
    with pytest.raises(UserError, match=r"must lie in \[0, 1\].*to_unit"):
        mnist_features(x.float() / 127.5 - 1)  # network-range floats are refused, not misread
    assert abs(mnist_fid(x, x)) < 1e-6
    big = torch.nn.functional.interpolate(x.float(), size=56, mode="nearest").to(torch.uint8)
    assert mnist_features(big.expand(-1, 3, -1, -1)).shape == (20, 128)  # RGB, other sizes: resized


def test_mnist_classifier_on_real_digits():
    path = SHARED / "mnist" / "mnist.npz"
    if not path.is_file():
        pytest.skip(f"MNIST not found at {path} (shared data absent)")
    from coopnets.metrics.mnist_classifier import mnist_features, mnist_logits
    with np.load(path) as f:
        xt, yt = torch.from_numpy(f["x_test"][:2000])[:, None], f["y_test"][:2000]
    assert (mnist_logits(xt).argmax(1) == yt).mean() >= 0.985
    feats = mnist_features(xt)
    noise = mnist_features(torch.randint(0, 256, (1000, 1, 28, 28), dtype=torch.uint8))
    same = fid(feats[0::2], feats[1::2])  # interleaved halves: the same distribution
    noise = fid(feats[0::2], noise)
    ones = fid(feats[0::2], feats[yt == 1])  # one class only
    assert same < ones < noise and same < 0.1 * ones
