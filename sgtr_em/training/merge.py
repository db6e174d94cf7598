"""Stage worker, step 3: merge the stage's LoRA adapter into its input weights -> `<stage_dir>/merged/`.

    python -m sgtr_em.training.merge <stage_dir>

One process, no DeepSpeed. The next stage trains a fresh LoRA on these weights, as the paper does.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..contracts import read_runtime
from ..io import replace_dir
from ..models import load_tokenizer
from ..workers import worker_logging


def main(stage_dir: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rt = read_runtime(stage_dir)
    model = AutoModelForCausalLM.from_pretrained(rt.input_model, dtype=getattr(torch, rt.dtype))
    merged = PeftModel.from_pretrained(model, str(stage_dir / "adapter")).merge_and_unload()
    tmp = stage_dir / "merged.tmp"
    merged.save_pretrained(tmp)
    load_tokenizer(rt.input_model).save_pretrained(tmp)
    replace_dir(tmp, stage_dir / "merged")


if __name__ == "__main__":
    stage_dir = Path(sys.argv[1])
    worker_logging(stage_dir / "worker.log")
    main(stage_dir)
