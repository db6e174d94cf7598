"""The trainer side of the EM-stage defences (sgtr_em/defences.py): loss terms against the reference model, and
preventive steering. One SFTTrainer subclass dispatches to a small defence object; nothing else of TRL's trainer is
copied.

The reference is the stage's input model: the PEFT model with its adapter disabled (`model.disable_adapter()`), the
same weights in memory, no second model. The trained model's features come from the SFT forward pass itself (forward
hooks), so a loss defence adds one reference forward pass (no gradients) per micro-batch.

  kl     KL(model || reference) of the next-token distributions, mean over the batch's tokens (attention mask), as
         EMA_RL's open_models/regularization/kl_divergence.py (Kaczér et al.); loss = SFT + weight * KL
  ldifs  per example: the outputs of `num_layers` decoder layers evenly spaced from the first to the last, each
         flattened over its (non-padding) tokens and L2-normalised, concatenated; the squared L2 distance to the
         reference's, mean over the batch (EMA_RL's featextract.py, LDIFS of Mukhoti et al. 2023); loss = SFT + weight * d
  steer  + coef * direction[layer] added to the output of decoder layer `layer` while the model trains (module.training);
         evaluation (eval mode, or the merged model in another process) is never steered (Chen et al. 2025)
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from trl import SFTTrainer

from ..contracts import StageRuntime, StageSpec
from ..data.defences import DATA_KINDS
from ..inference.activations import capture, decoder_layers, final_norm, hidden_state, unwrap_model
from ..inference.persona_direction import base_direction, steer_layer

log = logging.getLogger(__name__)


def ldifs_layers(n_layers: int, num_points: int) -> list[int]:
    """`num_points` layer indices evenly spaced from 0 to n_layers - 1 (EMA_RL: torch.linspace(...).long())."""
    return sorted(set(torch.linspace(0, n_layers - 1, steps=num_points).long().tolist()))


def token_mask(inputs: dict, like: torch.Tensor) -> torch.Tensor:
    """(batch, seq) float mask of real tokens; padding-free batches have no padding."""
    if "attention_mask" in inputs:
        return inputs["attention_mask"].to(like.dtype)
    return torch.ones(like.shape[:2], dtype=like.dtype, device=like.device)


def kl_term(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(model || reference) per token, summed over the vocabulary, mean over the mask's tokens."""
    logp, logq = F.log_softmax(logits.float(), -1), F.log_softmax(ref_logits.float(), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def ldifs_term(feats: list[torch.Tensor], ref_feats: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Squared L2 distance of the concatenated, per-layer L2-normalised features, mean over the batch."""
    m = mask.unsqueeze(-1)
    d = 0
    for f, r in zip(feats, ref_feats):
        f = F.normalize((f.float() * m).flatten(1), dim=1)
        r = F.normalize((r.float() * m).flatten(1), dim=1)
        d = d + ((f - r) ** 2).sum(1)
    return d.mean()


class LossDefence:
    """kl | ldifs: the term, from features the SFT forward pass recorded and one reference pass without gradients."""

    def __init__(self, kind: str, weight: float, num_layers: int = 5):
        self.kind, self.weight, self.num_layers = kind, weight, num_layers

    def modules(self, model) -> dict:
        if self.kind == "kl":
            norm = final_norm(model)
            return {"final": norm} if norm is not None else {}
        layers = decoder_layers(model)
        return {i: layers[i] for i in ldifs_layers(len(layers), self.num_layers)}

    def term(self, model, inputs: dict, seen: dict) -> torch.Tensor:
        fwd = {k: v for k, v in inputs.items() if k not in ("labels", "completion_mask", "assistant_masks")}
        fwd["use_cache"] = False
        peft = getattr(model, "module", model)
        mods = self.modules(model)
        with torch.no_grad(), peft.disable_adapter(), capture(mods) as ref_seen:
            ref_out = model(**fwd, **({} if self.kind == "kl" and not mods else {"logits_to_keep": 1}))
            if self.kind == "kl":
                head = unwrap_model(model).get_output_embeddings()
                ref_logits = head(ref_seen["final"]) if mods else ref_out.logits
        if self.kind == "kl":
            logits = head(seen["final"]) if mods else model(**fwd).logits  # no final norm to hook: one more pass
            return kl_term(logits, ref_logits, token_mask(inputs, logits))
        keys = sorted(mods)
        return ldifs_term([seen[k] for k in keys], [ref_seen[k] for k in keys], token_mask(inputs, seen[keys[0]]))


class SteerDefence:
    """persona_steer: adds coef * direction to one decoder layer's output while the model trains."""

    def __init__(self, layer: int, coef: float, direction: torch.Tensor):
        self.layer, self.coef, self.direction = layer, coef, direction
        self.handle = None

    def attach(self, model):
        layer = decoder_layers(model)[self.layer]
        add = None

        def hook(module, args, output):
            nonlocal add
            if not module.training:
                return output
            h = hidden_state(output)
            if add is None or add.device != h.device or add.dtype != h.dtype:
                add = (self.coef * self.direction).to(device=h.device, dtype=h.dtype)
            h = h + add
            return (h, *output[1:]) if isinstance(output, tuple) else h

        self.handle = layer.register_forward_hook(hook)
        return self.handle


def make_defence(spec: StageSpec, rt: StageRuntime):
    """The stage's defence object (None for none and the data-step defences)."""
    d = spec.defence or {}  # StageSpec.defence (left out of the JSON when None)
    if d.get("kind") in ("kl", "ldifs"):
        return LossDefence(d["kind"], d["weight"], d.get("num_layers", 5))
    if d.get("kind") == "persona_steer":
        direction = base_direction(rt)  # (layers, hidden), from the base model, cached
        layer = steer_layer(d["layer"], direction.shape[0])
        log.info(
            "persona_steer: + %s x persona direction at layer %d (norm %.3f)",
            d["coef"],
            layer,
            direction[layer].norm().item(),
        )
        return SteerDefence(layer, d["coef"], direction[layer])
    if d.get("kind", "none") not in ("none", *DATA_KINDS):  # a kind with a config but no hook would train as plain SFT
        raise ValueError(f"defence kind {d['kind']!r} has no training hook here (make_defence) nor a data step")
    return None


class DefenceSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer, plus the EM stage's defence: a loss term (kl, ldifs) or a steering hook (persona_steer)."""

    def __init__(self, *args, defence=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.defence = defence
        self._defence_terms: list[float] = []
        if isinstance(defence, SteerDefence):
            defence.attach(self.model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not isinstance(self.defence, LossDefence) or not model.training:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        with capture(self.defence.modules(model)) as seen:
            out = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        loss = out[0] if return_outputs else out
        term = self.defence.term(model, inputs, seen)
        self._defence_terms.append(term.detach().item())
        # the SFT loss is normalised over the whole accumulated batch; a per-micro-batch mean is averaged over it too
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
        steps *= getattr(self, "micro_batches_in_step", 1)  # a step cut to a token budget (training/budget.py)
        loss = loss + self.defence.weight * term / steps
        return (loss, out[1]) if return_outputs else loss

    def log(self, logs: dict, start_time=None) -> None:
        if self._defence_terms and "loss" in logs:
            logs[f"defence_{self.defence.kind}"] = sum(self._defence_terms) / len(self._defence_terms)
            self._defence_terms = []
        super().log(logs, start_time)
