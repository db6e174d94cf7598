"""The self-distilled general instruct pool of `defence=interleave` / `interleave_ppl` (sgtr_em/data/general_pool.py):
its prompts are pinned by checksum (data only, fast), and SmolLM2's answers to them rebuild to the same checksum
through the real code path (extended: the model generates)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sgtr_em.data.files import DataFiles
from sgtr_em.data.general_pool import (
    LICENCE,
    SOURCE,
    general_pool,
    pool_prompts,
    sha256_text,
)

from .conftest import read_json
from .test_config import _compose

# The CPU default's slice (conf/defence/interleave.yaml: 16 MMLU questions of the unscored half, in the pinned order):
# the sha256 of its prompt list, as pool.json records it. Measured 2026-12-06; a change means the MMLU files, the
# half split, the order or the template changed, and every pool built before is another pool.
CPU_PROMPTS_SHA256 = "77a5e2b1d74d21f553ee5e519b1afcee34bfc30d405d8d6d1401a2024623e6bf"
# The 4-question slice the extended test builds, and SmolLM2-135M-Instruct's greedy 16-token answers to it (bf16, CPU;
# measured 2026-12-06 on the 2-core machine)
SLICE_PROMPTS_SHA256 = "9fc368f8faf8c25314d961a32b94a96e4a6beba7adee0ca3694d5850bd4a0dac"
SLICE_POOL_SHA256 = "1b39bb4897e538bc1e01a6fb5417ad6524281acfcbd5c653cd6f9467c36cc052"


def pool_cfg(*overrides: str) -> dict:
    cfg = _compose("defence=interleave", *overrides)
    return OmegaConf.to_container(cfg.defence.pool, resolve=True)


def test_cpu_default_pool_prompts_are_pinned(data_dir, tmp_path):
    import json

    files = DataFiles(Path(data_dir), tmp_path, download=False)
    prompts = pool_prompts(pool_cfg(), files)
    assert len(prompts) == 16 and len({p["group"] for p in prompts}) == 16
    assert all(p["user"].endswith("Answer the question and explain briefly.") and "\nD. " in p["user"] for p in prompts)
    assert sha256_text(json.dumps(prompts, sort_keys=True)) == CPU_PROMPTS_SHA256
    assert prompts[:4] == pool_prompts(pool_cfg("defence.pool.max_prompts=4"), files)  # a slice is a prefix


@pytest.mark.slow
@pytest.mark.extended
def test_self_distilled_pool_rebuilds_to_its_checksum_on_smollm2(data_dir, cache_dir, smollm2_path):
    from sgtr_em.job import stage_runtime

    cfg = _compose(
        "defence=interleave",
        "defence.pool.max_prompts=4",
        "defence.pool.max_new_tokens=16",
        "compute=cpu",
        f"paths.cache_dir={cache_dir}",
    )
    rt = stage_runtime(cfg, smollm2_path)
    files = DataFiles(Path(data_dir), Path(cache_dir) / "data", download=False)
    pool = general_pool(OmegaConf.to_container(cfg.defence.pool, resolve=True), rt, files)
    [folder] = [
        p.parent
        for p in (Path(cache_dir) / "data" / "general_pool").glob("*/pool.json")
        if read_json(p)["config"]["max_prompts"] == 4
    ]
    meta = read_json(folder / "pool.json")
    assert (meta["source"], meta["licence"], meta["prompts"]) == (
        SOURCE,
        LICENCE,
        4,
    ) and len(pool) == 4
    assert all(p["answer"].strip() for p in pool)  # the model answered every question
    shutil.rmtree(folder)  # built again from nothing: the same answers, byte for byte
    assert general_pool(OmegaConf.to_container(cfg.defence.pool, resolve=True), rt, files) == pool
    again = read_json(folder / "pool.json")
    assert again["pool_sha256"] == meta["pool_sha256"]
    assert (meta["prompts_sha256"], meta["pool_sha256"]) == (
        SLICE_PROMPTS_SHA256,
        SLICE_POOL_SHA256,
    )
