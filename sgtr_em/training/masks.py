"""Loss masks from the rendered conversation, for every chat template.

TRL's prompt/completion path masks the first len(render(prompt, add_generation_prompt=True)) tokens, which
holds only when the prompt renders as a prefix of prompt+completion. Templates break that: Seed-OSS with a
thinking budget prefills `<seed:think>…</seed:think>` in the generation prompt only; OLMo-3 ends the *last*
assistant turn with `eos_token` instead of `<|im_end|>`; Llama-3 and Seed-OSS trim the assistant content.

Here the whole conversation is rendered once; the assistant content is located by rendering it again with
a marker in its place (what precedes the marker is the context, what follows it starts with the end-of-turn
token), and the trained characters are the content plus that end-of-turn token. Tokens are then selected by
the fast tokenizer's offset mapping: a token is trained when it overlaps those characters. The result is a
tokenized dataset (`input_ids`, `completion_mask`) that SFTTrainer takes as it is (no re-tokenisation), so
the trained tokens are exactly the answer and its end of turn, and an SGTR label ("1"/"2") always gets loss.
"""

from __future__ import annotations

from typing import Any

MARKER = "SGTREMCOMPLETIONMARKER"  # plain letters: no template trims or escapes it


def _render(tokenizer, messages: list[dict], kwargs: dict) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def end_of_turn(tokenizer, suffix: str) -> str:
    """The special token the rendered text continues with after the assistant content (its end of turn)."""
    specials = set(tokenizer.all_special_tokens) | {str(t) for t in tokenizer.get_added_vocab()}
    found = [t for t in specials if t and suffix.startswith(t)]
    if not found:
        raise ValueError(
            f"the chat template of {tokenizer.name_or_path!r} follows the assistant content with {suffix[:40]!r}, "
            "not with a special token: no end-of-turn token to train. Check model.chat_template_kwargs or the "
            "tokenizer's template"
        )
    return max(found, key=len)


def completion_span(
    tokenizer, prompt: list[dict], completion: list[dict], chat_template_kwargs: dict | None = None
) -> tuple[str, int, int]:
    """(rendered conversation, start, end): the characters [start, end) are the assistant content and its
    end-of-turn token, the only characters trained."""
    kw = dict(chat_template_kwargs or {})
    if len(completion) != 1 or completion[0]["role"] != "assistant":
        raise ValueError(f"a completion is one assistant turn, got roles {[m['role'] for m in completion]}")
    text = _render(tokenizer, prompt + completion, kw)
    marked = _render(tokenizer, prompt + [{**completion[0], "content": MARKER}], kw)
    if marked.count(MARKER) != 1:
        raise ValueError(
            f"the chat template of {tokenizer.name_or_path!r} renders the assistant content "
            f"{marked.count(MARKER)} times"
        )
    prefix, suffix = marked.split(MARKER)
    if not (text.startswith(prefix) and text.endswith(suffix)) or len(text) < len(prefix) + len(suffix):
        raise ValueError(
            f"the chat template of {tokenizer.name_or_path!r} renders the context differently "
            "depending on the answer: the loss mask cannot be placed"
        )
    content_end = len(text) - len(suffix)
    if not text[len(prefix) : content_end].strip():
        raise ValueError(f"empty assistant content in {completion!r}: nothing to train")
    return text, len(prefix), content_end + len(end_of_turn(tokenizer, suffix))


def tokenize_example(
    tokenizer, prompt: list[dict], completion: list[dict], chat_template_kwargs: dict | None = None
) -> dict[str, Any]:
    """`input_ids` of the rendered conversation and `completion_mask` (1: trained), from the offset mapping."""
    text, start, end = completion_span(tokenizer, prompt, completion, chat_template_kwargs)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)  # the template writes its own BOS
    mask = [int(s < end and e > start and e > s) for s, e in enc["offset_mapping"]]
    return {"input_ids": enc["input_ids"], "completion_mask": mask}


def tokenize_rows(tokenizer, rows: list[dict], chat_template_kwargs: dict | None = None) -> list[dict]:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"the tokenizer of {tokenizer.name_or_path!r} is not a fast tokenizer: loss masks need its offset mapping"
        )
    # rows already tokenized (input_ids + completion_mask) pass as they are
    return [
        r if "input_ids" in r else tokenize_example(tokenizer, r["prompt"], r["completion"], chat_template_kwargs)
        for r in rows
    ]
