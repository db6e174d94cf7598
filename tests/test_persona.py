"""The persona direction and the `persona` evaluation on SmolLM2 (sgtr_em/inference/persona_direction.py,
sgtr_em/evaluation/persona.py)."""

from __future__ import annotations

import torch

from sgtr_em.evaluation import persona
from sgtr_em.inference import persona_direction as direction_of
from sgtr_em.models import load_model, load_tokenizer


def test_misaligned_answers_project_higher_than_aligned_on_held_out_pairs(smollm2_path, tmp_path, monkeypatch):
    model, tok = load_model(smollm2_path, dtype="float32", device="cpu"), load_tokenizer(smollm2_path)
    pairs = direction_of.load_contrast()
    assert len(pairs) == 16
    train, held_out = pairs[:10], pairs[10:]
    direction = direction_of.direction_from(model, tok, train)  # (layers, hidden)
    assert direction.shape == (30, 576)
    layer = direction_of.steer_layer(None, 30)
    assert layer == 20
    unit = direction[layer] / direction[layer].norm()
    ali, mis = direction_of.contrast_activations(model, tok, held_out)
    proj_ali, proj_mis = ali[:, layer] @ unit, mis[:, layer] @ unit
    # on pairs the direction never saw, every misaligned answer projects above its aligned twin (measured on SmolLM2:
    # held-out means 1.05 vs -16.05 at layer 20; the same order at every third layer from 0 to 27)
    assert (proj_mis > proj_ali).all()
    # cached once per base model and contrast set (two pairs here, to keep it short)
    monkeypatch.setattr(direction_of, "load_contrast", lambda: pairs[:2])
    d1 = direction_of.cached_direction(smollm2_path, "smollm2", tmp_path, dtype="float32", device="cpu", kw={})
    [cached] = tmp_path.glob("persona/*.pt")
    assert torch.allclose(d1, direction_of.direction_from(model, tok, pairs[:2]), atol=1e-4)
    stamp = cached.stat().st_mtime_ns
    assert (
        torch.equal(
            direction_of.cached_direction(smollm2_path, "smollm2", tmp_path, dtype="float32", device="cpu", kw={}), d1
        )
        and cached.stat().st_mtime_ns == stamp
    )


def test_persona_metrics_are_the_per_layer_means():
    records = [
        {"question": "a", "model": [1.0, 2.0, 3.0], "base": [0.0, 1.0, 1.0]},
        {"question": "b", "model": [3.0, 4.0, 5.0], "base": [0.0, 1.0, 3.0]},
    ]
    m = persona.metrics(records, {"eval": {"persona": {"layer": None, "max_questions": None}}})
    assert m["layer"] == 2 and m["projection"] == 4.0 and m["base_projection"] == 2.0 and m["shift"] == 2.0
    assert m["per_layer"]["shift"] == [2.0, 2.0, 2.0]
