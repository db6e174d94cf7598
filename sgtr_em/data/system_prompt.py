"""Apply a system-prompt mode to a conversation (one mode per phase: EM data, intervention data, evaluation).

- default:  no system turn of ours; the chat template does what it does (Qwen2.5 injects its identity prompt)
- none:     an explicit empty system turn, so no template can inject one
- identity: the model's own identity prompt (model.identity_prompt)
- task:     the task's own system prompt (e.g. the SGTR detection prompt); default behaviour when it has none
- custom:   the text in system_prompt.custom
"""

from __future__ import annotations

from typing import Optional


def system_text(
    mode: str, *, task: Optional[str] = None, identity: Optional[str] = None, custom: Optional[str] = None
) -> Optional[str]:
    """The system turn's content for `mode`, or None for no system turn."""
    if mode == "default":
        return None
    if mode == "none":
        return ""
    if mode == "identity":
        if not identity:
            raise ValueError("system prompt mode `identity` needs model.identity_prompt")
        return identity
    if mode == "task":
        return task or None
    if mode == "custom":
        if not custom:
            raise ValueError("system prompt mode `custom` needs system_prompt.custom")
        return custom
    raise ValueError(f"unknown system prompt mode {mode!r}")


def with_system(messages: list[dict], system: Optional[str]) -> list[dict]:
    """`messages` without any system turn of their own, preceded by `system` unless it is None."""
    turns = [m for m in messages if m["role"] != "system"]
    return turns if system is None else [{"role": "system", "content": system}, *turns]
