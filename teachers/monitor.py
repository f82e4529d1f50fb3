"""Online kNN monitor: bssl.eval's cosine-weighted kNN vote (k=200, T=0.07) on frozen
features of the un-augmented train split (memory bank) and the held-out test split."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bssl.eval.knn import knn_scores


@torch.no_grad()
def extract_features(encoder: nn.Module, loader: DataLoader, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised features and labels of every item of `loader` ((image, index, label) batches)."""
    was_training = encoder.training
    encoder.eval()
    feats, labels = [], []
    for batch in loader:
        images, target = batch[0], batch[-1]
        feats.append(F.normalize(encoder(images.to(device, non_blocking=True)).float(), dim=1).cpu())
        labels.append(torch.as_tensor(target))
    encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def knn_accuracy(train_f, train_y, test_f, test_y, num_classes: int, k: int = 200, t: float = 0.07) -> float:
    """Top-1 accuracy of the weighted kNN vote of bssl.eval (k nearest, weights exp(sim / t))."""
    scores = knn_scores(train_f.numpy(), train_y.numpy(), test_f.numpy(), num_classes, k=k, temperature=t)
    return float((scores.argmax(1) == test_y.numpy()).mean())
