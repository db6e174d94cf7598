"""Generation backends for the model under test; the Hugging Face one: chat template, generation in left-padded
batches, option scoring one unpadded prompt at a time (so batching never changes a probability).

Every backend has `generate(conversations, ...)` (one answer each) and `option_probs(conversations, options)`
(the next-token probability of each single-token option, the most likely token, and a greedy answer where a
backend gives no probabilities). `make_generator` builds the one `eval.generation.backend` names.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any, Optional, Sequence

import torch
from tqdm import tqdm

from ..models import load_model, load_tokenizer, resolve_device
from .generation_api import OpenAIGenerator
from .generation_vllm import VLLMGenerator
from .sampling import sampling_probs

logger = logging.getLogger(__name__)

CPU_GENERATION_BATCH = 8  # eval.batch_size=auto on a CPU (the CPU default's numbers were pinned at 8)
# of the GPU memory free after the weights, for a padded batch (the rest: allocator slack)
GENERATION_MEMORY_SHARE = 0.7
MAX_GENERATION_BATCH = 1024  # past this a decode step is compute-bound (7B: 800 sequences ran 5,603 tok/s on an H100)


def fitted_generation_batch(
    config, *, free_bytes: int, prompt_tokens: int, max_new_tokens: int, n: int, dtype_bytes: int = 2
) -> int:
    """How many prompts one padded `generate` call holds in `free_bytes`: per sequence, its KV cache at full length,
    a step's fp32 logits with the sampling copies, and its share of one layer's prefill activations (MLP and attention
    scores, the eager worst case). Measured on the 7B shape (bench/results/issue18-h100/gen_7b_sweep.json): padded
    batch 64 gave 931 tok/s, 200 gave 3,152, 800 gave 5,603, so the largest batch that fits is the fast one."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_per_token = 2 * text.num_hidden_layers * kv_heads * head_dim * dtype_bytes
    length = prompt_tokens + max_new_tokens
    per_sequence = (
        length * kv_per_token
        + 4 * text.vocab_size * 4
        + prompt_tokens * (3 * text.intermediate_size + 6 * text.hidden_size) * dtype_bytes
        + heads * prompt_tokens * prompt_tokens * 4
    )
    fitted = int(GENERATION_MEMORY_SHARE * free_bytes // per_sequence)
    return max(1, min(n, MAX_GENERATION_BATCH, fitted))


class HFGenerator:
    def __init__(
        self,
        path: str,
        *,
        dtype: str = "float32",
        device: str = "auto",
        batch_size: int | str = "auto",
        chat_template_kwargs: Optional[dict[str, Any]] = None,
        trust_remote_code: bool = False,
    ):
        device = resolve_device(device)
        self._init(
            load_model(path, dtype=dtype, device=device, trust_remote_code=trust_remote_code),
            load_tokenizer(path, padding_side="left", trust_remote_code=trust_remote_code),
            batch_size,
            chat_template_kwargs,
        )

    @classmethod
    def from_model(cls, model, tokenizer, *, batch_size: int | str = "auto", chat_template_kwargs=None) -> HFGenerator:
        """Wraps a model already in memory (benchmarks, tests)."""
        gen = cls.__new__(cls)
        tokenizer.padding_side = "left"
        gen._init(model.eval(), tokenizer, batch_size, chat_template_kwargs)
        return gen

    def _init(self, model, tokenizer, batch_size: int | str, chat_template_kwargs) -> None:
        if batch_size != "auto" and not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"eval.batch_size must be a positive integer or auto, not {batch_size!r}")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.device = str(next(model.parameters()).device.type)
        self.chat_template_kwargs = dict(chat_template_kwargs or {})

    def render(self, messages: Sequence[dict]) -> str:
        """The prompt text the model sees, ending where the assistant's answer starts."""
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs
        )

    def fitted_batch_size(self, texts: Sequence[str], max_new_tokens: int) -> int:
        """`batch_size`, or for `auto` on a GPU as many prompts as the free memory holds (`fitted_generation_batch`);
        8 on a CPU. A padded batch that runs out of memory anyway is halved and redone (`generate`)."""
        if self.batch_size != "auto":
            return self.batch_size
        if self.device != "cuda":
            return CPU_GENERATION_BATCH
        # free on the device, plus what torch's allocator holds unused (a previous call's cache, reusable here)
        free = torch.cuda.mem_get_info()[0] + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
        longest = max(len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"])
        return fitted_generation_batch(
            self.model.config,
            free_bytes=free,
            prompt_tokens=longest,
            max_new_tokens=max_new_tokens,
            n=len(texts),
            dtype_bytes=next(self.model.parameters()).element_size(),
        )

    def _unpadded(self, conversations: Sequence[Sequence[dict]], desc: str):
        """([index], one tokenised prompt): one forward pass per prompt, no padding, no mask, positions 0..n-1, so
        a prompt's numbers depend on its own tokens only, never on the batch it came in. In bf16 padding changes
        them (left padding moved SmolLM2's option probabilities by up to 13 % relative, 11 % with exact position ids:
        another attention/GEMM shape rounds differently), and so does batching equal-length prompts (the kernel
        picked for another row count rounds differently); issue 15."""
        for i, c in enumerate(tqdm(conversations, desc=desc, unit="prompt")):
            ids = self.tokenizer(self.render(c), return_tensors="pt", add_special_tokens=False)["input_ids"]
            yield [i], {"input_ids": ids.to(self.device)}

    def generation_config(self, *, max_new_tokens: int, temperature: float, top_p: float, top_k: Optional[int]):
        """Exactly these decoding parameters: a fresh GenerationConfig, so nothing of the model's own
        generation_config (Qwen2.5-Instruct's repetition_penalty 1.05, top_k 20, ...) is inherited."""
        from transformers import GenerationConfig

        tok = self.tokenizer
        eos = getattr(self.model.generation_config, "eos_token_id", None) or tok.eos_token_id  # where answers end
        # transformers fills every None of a passed config from the model's generation_config: so each knob that
        # changes the next-token distribution is set, to its neutral value where the protocol names none
        kw = dict(
            max_new_tokens=max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=eos,
            bos_token_id=getattr(self.model.generation_config, "bos_token_id", None),
            repetition_penalty=1.0,
            encoder_repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            suppress_tokens=[],
            begin_suppress_tokens=[],
            bad_words_ids=None,
            sequence_bias=None,
        )
        if temperature <= 0:  # greedy: transformers applies no sampling knob (temperature, top-k/p, min-p, ...), so
            # none is set (a set one only draws its "not valid and may be ignored" warning)
            return GenerationConfig(do_sample=False, **kw)
        return GenerationConfig(
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k or 0,
            min_p=0.0,
            typical_p=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
            top_h=None,
            **kw,
        )

    @torch.no_grad()
    def generate(
        self,
        conversations: Sequence[Sequence[dict]],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: Optional[int] = None,
        seed: int = 0,
        desc: str = "generate",
    ) -> list[str]:
        """One answer per conversation; greedy when temperature is 0, else sampled (seeded per batch) with exactly
        `temperature`, `top_p`, `top_k` (None or 0: off), and nothing else (no repetition penalty)."""
        out: list[str] = [""] * len(conversations)
        gen_cfg = self.generation_config(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k
        )
        texts = [self.render(c) for c in conversations]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # batches of like lengths: little padding
        size = self.fitted_batch_size(texts, max_new_tokens)
        start, b = 0, 0
        with tqdm(total=len(texts), desc=desc, unit="answer") as bar:
            while start < len(order):
                idx = order[start : start + size]
                enc = self.tokenizer(
                    [texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
                ).to(self.device)
                torch.manual_seed(seed * 100_003 + b)
                try:
                    ids = self.model.generate(**enc, generation_config=gen_cfg)
                except torch.cuda.OutOfMemoryError:
                    if size == 1:
                        raise
                    size = max(1, size // 2)  # the memory model was wrong for this batch: redo it halved
                    logger.warning("generation ran out of GPU memory; batch halved to %d", size)
                    torch.cuda.empty_cache()
                    continue
                answers = self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                for i, answer in zip(idx, answers):
                    out[i] = answer.strip()
                start, b = start + len(idx), b + 1
                bar.update(len(idx))
        self.last_batch_size = size
        return out

    def single_token_ids(self, options: Sequence[str]) -> list[int]:
        ids = []
        for o in options:
            tok = self.tokenizer.encode(o, add_special_tokens=False)
            if len(tok) != 1:
                raise ValueError(f"option {o!r} is {len(tok)} tokens for this tokenizer; it must be one")
            ids.append(tok[0])
        return ids

    @torch.no_grad()
    def next_token_logits(self, enc) -> torch.Tensor:
        """Next-token logits (batch, vocab) in float32 whatever the model's dtype: the final projection (the output
        embedding) runs in fp32 on the last position's hidden state, so bf16 rounding makes no exact ties."""
        head = self.model.get_output_embeddings()
        seen: dict = {}
        hook = head.register_forward_hook(lambda mod, args, out: seen.__setitem__("h", args[0]))
        try:
            try:
                self.model(**enc, logits_to_keep=1)
            except TypeError:  # an architecture without logits_to_keep
                self.model(**enc)
        finally:
            hook.remove()
        h = seen["h"][:, -1, :].float()  # the last position predicts the next token
        # in vocabulary chunks, so a 152k x 5120 head is never copied to fp32 whole
        logits = torch.cat([h @ w.float().T for w in head.weight.split(16384)], dim=-1)
        if head.bias is not None:
            logits = logits + head.bias.float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    @torch.no_grad()
    def option_probs(
        self,
        conversations: Sequence[Sequence[dict]],
        options: Sequence[str],
        desc: str = "score options",
        max_new_tokens: int = 1,
        sampling: Optional[dict] = None,
    ) -> list[dict]:
        """Next-token probability of each single-token option, the most likely token overall, and (with `sampling`:
        temperature, top_p, top_k) each option's probability of being the sampled token under exactly those
        parameters over the whole vocabulary (`sampled_probs`; the rest is the invalid mass), all in float32.

        One unpadded forward pass per prompt (`_unpadded`): the numbers equal scoring the prompt alone, exactly.
        (`max_new_tokens` is for backends that fall back to a greedy answer; this one always has probabilities.)
        """
        option_ids = self.single_token_ids(options)
        out: list[dict] = [{}] * len(conversations)
        for idx, enc in self._unpadded(conversations, desc):
            logits = self.next_token_logits(enc)
            probs = torch.softmax(logits, dim=-1)
            sampled = sampling_probs(logits, **sampling) if sampling else None
            top = logits.argmax(dim=-1)
            for row, i in enumerate(idx):
                out[i] = {
                    "probs": {o: probs[row, t].item() for o, t in zip(options, option_ids)},
                    "top_token": self.tokenizer.decode([top[row].item()]),
                    "text": None,
                }
                if sampled is not None:
                    out[i]["sampled_probs"] = {o: sampled[row, t].item() for o, t in zip(options, option_ids)}
        return out


class ContinuousBatchGenerator(HFGenerator):
    """The HF backend's model and prompts, generating through transformers' continuous batching (`generate_batch`:
    paged KV cache, requests join and leave the running batch as they start and finish, CUDA graphs on a GPU)
    instead of padded batches that wait for their longest answer. Greedy answers equal HFGenerator's; sampled ones
    follow the same distribution (not the same draws). `option_probs` is HFGenerator's (one forward pass).
    `cb_config`: ContinuousBatchingConfig fields (None: transformers' own choices)."""

    cb_config: Optional[dict] = None

    @torch.no_grad()
    def generate(
        self,
        conversations: Sequence[Sequence[dict]],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: Optional[int] = None,
        seed: int = 0,
        desc: str = "generate",
    ) -> list[str]:
        from transformers import GenerationConfig

        if not conversations:
            return []
        prompts = [self.tokenizer(self.render(c), add_special_tokens=False)["input_ids"] for c in conversations]
        sample = temperature > 0
        eos = self.model.generation_config.eos_token_id
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            eos_token_id=eos,
            pad_token_id=self.tokenizer.pad_token_id,
            top_k=(top_k or None) if sample else None,
            **(dict(temperature=temperature, top_p=top_p) if sample else {}),
        )
        torch.manual_seed(seed * 100_003)
        cb = None
        if self.cb_config:
            from transformers.generation.configuration_utils import ContinuousBatchingConfig

            cb = ContinuousBatchingConfig(**self.cb_config)
        results = self.model.generate_batch(
            inputs=prompts, generation_config=config, continuous_batching_config=cb, progress_bar=False
        )
        by_prompt: dict[tuple, list] = {}
        for r in results.values():  # matched to the inputs by their prompt (identical prompts: any order is fine)
            by_prompt.setdefault(tuple(r.prompt_ids), []).append(r)
        out = []
        self.last_generated_tokens = sum(len(r.generated_tokens) for r in results.values())
        for ids in prompts:
            r = by_prompt[tuple(ids)].pop(0)
            if getattr(r, "error", None):
                raise RuntimeError(f"continuous batching failed on a request: {r.error}")
            out.append(self.tokenizer.decode(r.generated_tokens, skip_special_tokens=True).strip())
        return out


def resolve_backend(backend: str, device: str) -> str:
    """`auto`: vLLM where it is installed and a GPU is there, else the padded HF engine, its batch fitted to the free
    GPU memory (eval.batch_size=auto): on the 7B shape it ran 2.1x transformers' continuous batching (paged SDPA, no
    flash-attn on the lent H100s; bench/results/issue18-h100/gen_7b_sweep.json)."""
    if backend != "auto":
        return backend
    if resolve_device(device) != "cuda":
        return "hf"
    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


def make_generator(
    gen_cfg: dict,
    path: str,
    *,
    dtype: str,
    device: str,
    batch_size: int | str,
    chat_template_kwargs: Optional[dict] = None,
    cache_dir=None,
    usage=None,
):
    """The backend `eval.generation.backend` names, for the model at `path` (an API model's name for openai)."""
    backend = resolve_backend(gen_cfg["backend"], device)
    if backend == "openai":
        return OpenAIGenerator(
            path, gen_cfg["api"], top_logprobs=gen_cfg["top_logprobs"], cache_dir=cache_dir, usage=usage
        )
    if backend == "vllm":
        return VLLMGenerator(path, dtype=dtype, chat_template_kwargs=chat_template_kwargs)
    engine = ContinuousBatchGenerator if backend == "hf_continuous" else HFGenerator
    return engine(path, dtype=dtype, device=device, batch_size=batch_size, chat_template_kwargs=chat_template_kwargs)
