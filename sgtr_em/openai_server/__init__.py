"""A local OpenAI-compatible server the project ships: chat completions with logprobs from a Hugging Face model,
fault injection (429/500 on a share of requests), OpenAI-style rate limits and request counters, for testing the API paths for real.

    python -m sgtr_em.openai_server --model smollm2 --port 8000 --fault-rate 0.3
"""

from .load_test import LoadTestEngine  # noqa: F401
from .server import Faults, OpenAIServer, RateLimits  # noqa: F401
