"""Evaluation metrics: FID/KID (Inception or MNIST-classifier features), Inception Score,
Parzen-window log-likelihood, PSNR/SSIM, recovery error and pairwise-SSIM diversity.

Nothing here downloads anything: feature networks are read from local files.
"""
from .fid import fid, fid_from_stats, feature_stats, kid, load_stats, mmd2_unbiased, save_stats
from .image_quality import pairwise_ssim, psnr, recovery_error, ssim
from .inception import inception_features, inception_reference_stats, load_inception
from .inception_score import classifier_logits, inception_score, load_classifier
from .mnist_classifier import (load_mnist_classifier, mnist_features, mnist_fid, mnist_logits,
                               mnist_reference_stats, train_mnist_classifier)
from .parzen import parzen_log_likelihood, parzen_score, select_bandwidth

__all__ = ["fid", "fid_from_stats", "feature_stats", "kid", "mmd2_unbiased", "save_stats", "load_stats",
           "psnr", "ssim", "recovery_error", "pairwise_ssim",
           "inception_features", "inception_reference_stats", "load_inception",
           "inception_score", "classifier_logits", "load_classifier",
           "mnist_features", "mnist_fid", "mnist_logits", "mnist_reference_stats",
           "load_mnist_classifier", "train_mnist_classifier",
           "parzen_log_likelihood", "select_bandwidth", "parzen_score"]
