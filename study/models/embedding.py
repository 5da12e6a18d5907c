"""Face embedding models: a timm backbone (with the small-image stem of study.models.classifier), an embedding
layer and a margin-loss head; verification by cosine similarity of L2-normalised embeddings.

    model = build_embedding_model(spec, num_classes=28, channels=1, resolution=32)   # spec.embedding set
    logits = model(images, labels)       # training: the margin applied to each image's own identity
    model.features(images)               # L2-normalised embeddings (N, dim)
    verify(model, ds.verification)       # verif_auc, verif_eer, verif_acc, tar_at_far_*, rank1, roc (study.verification)

`train_classifier` trains it like any classifier (same batches, budget, schedule and augmentation): the
cross-entropy over the head's margin logits *is* the margin loss. Mixed AugGen / ScoreMix samples labelled
`new-class` are new identities: the head has one row per training identity and per mixed pair (the papers'
recipe; rows beyond the training identities are used in training only).

Heads, with cos theta_j = <e/|e|, w_j/|w_j|> for embedding e and class weight w_j, target class y:
- ArcFace (Deng et al., CVPR 2019): s cos(theta_y + m) for the target, s cos theta_j otherwise; where
  theta_y + m > pi it is s (cos theta_y - m sin m) instead (insightface's fallback, keeps the logit monotonic).
- CosFace (Wang et al., CVPR 2018): s (cos theta_y - m).
- AdaFace (Kim et al., CVPR 2022): s (cos(theta_y + g_angle) - g_add) with g_angle = -m z, g_add = m z + m,
  z = clip(h (|e| - mu) / (sigma + eps), -1, 1) from the batch's embedding norms, mu and sigma running means of
  their batch mean and std (momentum 0.01; the norm is not differentiated through). Low-norm (hard, low-quality)
  images get an ArcFace-like angular margin, high-norm ones a CosFace-like additive one.
- softmax: a plain linear layer (with bias) on the unnormalised embedding.
At evaluation (no labels) every margin head returns s cos theta_j (class probabilities for the reference judge).

Embedding layer: BN, dropout, linear, BN over the backbone's last feature map, flattened (ArcFace's "E" output:
faces are aligned, so where a feature is matters; `pool: avg` uses the globally pooled features instead).
Cost: the backbone's (study.models.classifier); the head adds dim x classes multiply-adds per image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from study.data.datasets import Verification
from study.grid import ClassifierSpec, EmbeddingSpec
from study.models.classifier import ImageClassifier, build_network
from study.verification import cosine_scores, rank1, verification_metrics

ADAFACE_H = 0.333  # AdaFace's concentration h
ADAFACE_MOMENTUM = 0.01  # its running batch statistics of embedding norms
_EPS = 1e-7


class MarginHead(nn.Module):
    """Class weights (num_outputs, dim) and the logits of `loss` (module docstring)."""

    def __init__(self, dim: int, num_outputs: int, spec: EmbeddingSpec):
        super().__init__()
        self.loss, self.scale, self.margin = spec.loss, spec.scale, spec.margin
        self.weight = nn.Parameter(torch.empty(num_outputs, dim))
        nn.init.normal_(self.weight, std=0.01)
        if self.loss == "softmax":
            self.bias = nn.Parameter(torch.zeros(num_outputs))
        if self.loss == "adaface":  # AdaFace's initial values of the running norm statistics
            self.register_buffer("norm_mean", torch.tensor(20.0))
            self.register_buffer("norm_std", torch.tensor(100.0))

    @property
    def num_outputs(self) -> int:
        return self.weight.shape[0]

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings), F.normalize(self.weight)).clamp(-1 + _EPS, 1 - _EPS)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.loss == "softmax":
            return F.linear(embeddings, self.weight, self.bias)
        cos = self.cosine(embeddings)
        if labels is None:
            return self.scale * cos
        target = cos.gather(1, labels[:, None])
        m = self.margin
        if self.loss == "cosface":
            new = target - m
        elif self.loss == "arcface":
            theta = torch.acos(target)
            new = torch.where(theta + m <= math.pi, torch.cos(theta + m), target - m * math.sin(m))
        else:
            z = self._adaface_scaler(embeddings)
            theta = torch.acos(target)
            new = torch.cos((theta - m * z).clamp(_EPS, math.pi - _EPS)) - (m * z + m)
        return self.scale * cos.scatter(1, labels[:, None], new)

    def _adaface_scaler(self, embeddings: torch.Tensor) -> torch.Tensor:
        norms = embeddings.detach().norm(dim=1, keepdim=True).clamp(0.001, 100)
        if self.training:
            with torch.no_grad():
                std = norms.std() if len(norms) > 1 else torch.zeros(())
                self.norm_mean.mul_(1 - ADAFACE_MOMENTUM).add_(ADAFACE_MOMENTUM * norms.mean())
                self.norm_std.mul_(1 - ADAFACE_MOMENTUM).add_(ADAFACE_MOMENTUM * std)
        return ((norms - self.norm_mean) / (self.norm_std + 1e-3) * ADAFACE_H).clamp(-1, 1)


class EmbeddingModel(ImageClassifier):
    """Backbone -> embedding (BN, dropout, linear, BN) -> margin head; takes images on the uint8 scale."""

    def __init__(self, net: nn.Module, spec: EmbeddingSpec, num_outputs: int, channels: int, resolution: int):
        super().__init__(net, num_outputs, channels, resolution)
        self.pool = spec.pool
        if spec.pool == "flatten":  # the last feature map's size at this resolution, from one dry run
            with torch.no_grad():
                width = net.eval().forward_features(torch.zeros(1, channels, resolution, resolution)).numel()
            net.train()
        else:
            width = net.num_features
        self.embed = nn.Sequential(
            nn.BatchNorm1d(width), nn.Dropout(spec.dropout), nn.Linear(width, spec.dim), nn.BatchNorm1d(spec.dim)
        )
        self.head = MarginHead(spec.dim, num_outputs, spec)

    def trained(self) -> nn.Module:
        return self  # the backbone, the embedding layer and the head

    def embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised embeddings (N, dim)."""
        x = self._normalize(images)
        x = self.net.forward_features(x).flatten(1) if self.pool == "flatten" else self.net(x)
        return self.embed(x)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.embeddings(images), labels)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embeddings(images))


def build_embedding_model(spec: ClassifierSpec, num_outputs: int, channels: int, resolution: int) -> EmbeddingModel:
    """A freshly initialised embedding model (global RNG: seed it first); `spec.embedding` must be set."""
    if spec.embedding is None:
        raise ValueError("classifier.embedding: not set; an embedding model needs its loss and dimension")
    net = build_network(spec, 0, channels, resolution)  # num_classes 0: timm returns the pooled features
    return EmbeddingModel(net, spec.embedding, num_outputs, channels, resolution)


@torch.no_grad()
def verify(model: ImageClassifier, ver: Verification, device="cpu", batch_size: int = 512, seed: int = 0) -> dict:
    """Verification metrics of the model's embeddings (`features`: L2-normalised for an embedding model, the
    penultimate features of a plain classifier) on the protocol's pairs, by cosine similarity; `rank1` where
    the protocol has a gallery. `seed` draws the bootstrap and, without given folds, the pair folds."""
    from study.models.classifier import features

    emb = features(model, ver.images, device=device, batch_size=batch_size)
    if not np.isfinite(emb).all():
        raise FloatingPointError("verification: the model produced non-finite embeddings")
    scores = cosine_scores(emb, ver.pairs)
    out = verification_metrics(scores, ver.same, folds=ver.folds, seed=seed)
    if ver.gallery is not None:
        g = ver.gallery
        out["rank1"] = rank1(emb[g], ver.identity[g], emb[~g], ver.identity[~g])
        out["n_probes"] = int((~g).sum())
    out["verif_protocol"] = f"{ver.protocol}; accuracy: {out['verif_protocol']}"
    out["n_verif_identities"] = len(ver.names)
    return out
