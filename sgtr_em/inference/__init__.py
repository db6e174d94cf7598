"""Model access, below data, training and evaluation: generation backends (Hugging Face, vLLM, an OpenAI-compatible
API), the API client with its rate limiting and on-disk cache, and log-likelihood scoring."""
