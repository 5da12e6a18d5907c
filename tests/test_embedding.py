"""Face embedding models: margin-loss logits against their formulas, finite gradients, new identities."""

import math

import numpy as np
import pytest
import torch

from study.data.datasets import Split, Verification
from study.grid import ClassifierSpec, EmbeddingSpec
from study.keys import derive_seed
from study.models.classifier import build_classifier, load_classifier, predict_proba, save_classifier, train_classifier
from study.models.embedding import EmbeddingModel, MarginHead, verify


def _head(loss: str, **kw) -> MarginHead:
    torch.manual_seed(0)
    return MarginHead(8, 5, EmbeddingSpec(loss=loss, **kw))


def _cos(e, w):
    return (e / e.norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).T


@pytest.mark.parametrize("loss", ["arcface", "cosface", "adaface"])
def test_margin_logits_match_the_formula(loss):
    head = _head(loss, scale=30.0, margin=0.4)
    torch.manual_seed(1)
    e, y = torch.randn(16, 8, dtype=torch.float64) * 3, torch.randint(0, 5, (16,))
    head = head.double().train()
    got = head(e, y).detach()
    cos = _cos(e, head.weight.detach())
    theta = torch.acos(cos.gather(1, y[:, None]))
    m = 0.4
    if loss == "cosface":
        target = torch.cos(theta) - m
    elif loss == "arcface":
        target = torch.where(theta + m <= math.pi, torch.cos(theta + m), torch.cos(theta) - m * math.sin(m))
    else:  # AdaFace: the running stats after this batch's update (momentum 0.01 from 20 and 100)
        norms = e.norm(dim=1, keepdim=True)
        mu, sd = 0.99 * 20 + 0.01 * norms.mean(), 0.99 * 100 + 0.01 * norms.std()
        z = ((norms - mu) / (sd + 1e-3) * 0.333).clamp(-1, 1)
        target = torch.cos(theta - m * z) - (m + m * z)
    expected = 30.0 * cos.scatter(1, y[:, None], target)
    assert torch.allclose(got, expected, atol=1e-5)
    # without labels (evaluation): s cos theta for every class
    assert torch.allclose(head.eval()(e).detach(), 30.0 * cos, atol=1e-5)


def test_arcface_keeps_the_logit_monotonic_past_pi():
    head = _head("arcface", scale=1.0, margin=0.5).double()
    w = head.weight.detach()[0]
    e = -w[None].clone()  # theta = pi: theta + m is past pi, the fallback cos(theta) - m sin(m) applies
    got = head(e, torch.tensor([0]))[0, 0].item()
    assert got == pytest.approx(-1 - 0.5 * math.sin(0.5), abs=1e-4)


@pytest.mark.parametrize("loss", ["arcface", "cosface", "adaface", "softmax"])
def test_gradients_are_finite(loss):
    spec = ClassifierSpec(arch="study_cnn", width=4, embedding=EmbeddingSpec(loss=loss, dim=16))
    torch.manual_seed(0)
    model = build_classifier(spec, 6, 1, 8)
    assert isinstance(model, EmbeddingModel)
    x = torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8)
    y = torch.arange(12) % 6
    loss_value = torch.nn.functional.cross_entropy(model(x, y), y)
    loss_value.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    head = model.head
    if loss != "softmax":  # embeddings aligned with their class weights: theta = 0, where acos has an infinite slope
        e = head.weight.detach()[:3].clone().requires_grad_(True)
        head(e, torch.arange(3)).sum().backward()
        assert torch.isfinite(e.grad).all()
    emb = model.eval().features(x)
    assert torch.allclose(emb.norm(dim=1), torch.ones(12), atol=1e-5)  # L2-normalised embeddings


def _faces(n_ids: int, per_id: int, seed: int) -> Split:
    """Toy identities: each a fixed random 8x8 pattern plus noise."""
    rng = np.random.default_rng(seed)
    protos = rng.integers(0, 256, (n_ids, 1, 8, 8))
    x = np.clip(np.repeat(protos, per_id, 0) + rng.normal(0, 30, (n_ids * per_id, 1, 8, 8)), 0, 255)
    return Split(torch.as_tensor(x.astype(np.uint8)), torch.arange(n_ids).repeat_interleave(per_id))


def test_new_identities_extend_the_head_and_verification_runs(tmp_path):
    spec = ClassifierSpec(arch="study_cnn", width=8, steps=30, batch_size=32, optimizer="adamw", lr=3e-3,
                          embedding=EmbeddingSpec(loss="arcface", dim=16, scale=16.0))  # fmt: skip
    real = _faces(4, 6, seed=0)
    mixed = _faces(3, 5, seed=1)
    synthetic = Split(mixed.images, mixed.labels + 4)  # labels: new-class -> identities 4, 5, 6
    torch.manual_seed(derive_seed(0, "classifier-init"))  # the initial weights train_classifier starts from
    initial = build_classifier(spec, 7, 1, 8).state_dict()
    model, stats = train_classifier(spec, real, 4, seed=0, flip=False, synthetic=synthetic)
    assert stats["num_outputs"] == 7 and model.head.weight.shape == (7, 16)
    for name in ("head.weight", "embed.2.weight", "net.stem.conv.weight"):  # every part is trained
        assert not torch.equal(model.state_dict()[name], initial[name]), name
    assert predict_proba(model, real.images, 4).shape == (24, 4)  # the judge's view: training identities only
    save_classifier(model, spec, tmp_path, num_classes=4)
    again = load_classifier(tmp_path)
    assert torch.equal(again.features(real.images), model.features(real.images))
    # verify on other identities: all pairs of 5 unseen identities, the first image of each as the gallery
    held = _faces(5, 4, seed=2)
    ids = held.labels.numpy()
    pairs = np.array([(i, j) for i in range(20) for j in range(i + 1, 20)])
    gallery = np.zeros(20, bool)
    gallery[::4] = True
    ver = Verification(held.images, ids, tuple("abcde"), pairs, ids[pairs[:, 0]] == ids[pairs[:, 1]], None,
                       gallery, "toy")  # fmt: skip
    m = verify(model, ver)
    assert m["n_pairs"] == 190 and m["n_same"] == 30 and 0 <= m["rank1"] <= 1 and m["n_probes"] == 15
    assert 0.5 < m["verif_auc"] <= 1  # unseen identities are still told apart better than chance


def test_soft_targets_do_not_fit_a_margin():
    spec = ClassifierSpec(arch="study_cnn", width=4, steps=2, embedding=EmbeddingSpec(dim=8))
    real = _faces(2, 2, seed=0)
    soft = Split(real.images, real.labels, torch.full((4, 2), 0.5))
    with pytest.raises(ValueError, match="soft targets have no single class for the arcface margin"):
        train_classifier(spec, real, 2, seed=0, flip=False, synthetic=soft)
