"""A model's internals: its decoder layers and final norm under any wrapper (DDP, DeepSpeed, PEFT), and their
outputs recorded by forward hooks. Used by the training defences (kl, ldifs, persona_steer) and the persona direction."""

from __future__ import annotations

from contextlib import contextmanager


def unwrap_model(model):
    """The transformers model under DDP/DeepSpeed and PEFT wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_layers(model):
    base = unwrap_model(model)
    inner = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    return inner.layers


def final_norm(model):
    base = unwrap_model(model)
    inner = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    return getattr(inner, "norm", None)


def hidden_state(output):
    """A decoder layer's hidden states, whether it returns them alone or first in a tuple."""
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def capture(modules: dict):
    """Records each module's output (with its autograd graph) into the yielded dict under its key."""
    seen, handles = {}, []
    for key, mod in modules.items():
        handles.append(mod.register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, hidden_state(o))))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def layer_activations(model, ids):
    """Every decoder layer's output for `ids` (1, seq): a (layers, seq, hidden) float tensor."""
    import torch  # deferred: the eval registry imports this module in the CLI process, which never loads torch

    layers = decoder_layers(model)
    with torch.no_grad(), capture(dict(enumerate(layers))) as seen:
        model(input_ids=ids)
    return torch.stack([seen[i][0].float() for i in range(len(layers))])
