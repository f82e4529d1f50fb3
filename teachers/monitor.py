"""Online kNN monitor: cosine-weighted kNN vote (k=200, T=0.07 as in InstDisc/MoCo) on frozen
features of the un-augmented train split (memory bank) and the held-out test split."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader


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


def knn_predict(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, num_classes: int,
                k: int = 200, t: float = 0.07, chunk: int = 512) -> torch.Tensor:
    """Class predictions for test_f: the k most similar bank items vote with weight exp(sim / t)."""
    k = min(k, train_f.shape[0])
    preds = []
    for start in range(0, test_f.shape[0], chunk):
        sim = test_f[start:start + chunk] @ train_f.t()
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], num_classes)
        votes.scatter_add_(1, train_y[top_idx], (top_sim / t).exp())
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def knn_accuracy(train_f, train_y, test_f, test_y, num_classes: int, k: int = 200, t: float = 0.07) -> float:
    pred = knn_predict(train_f, train_y.long(), test_f, num_classes, k, t)
    return float((pred == test_y.long()).float().mean())
