"""The worker contracts and the decisions made once (issue 19): one backend choice, typed stage and eval files, the
compute block resolved once per job, evaluations that declare their data files (a toy one from this folder)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sgtr_em import backend, job
from sgtr_em.backend import HFBackend, OpenAIBackend, backend_of
from sgtr_em.config import validate
from sgtr_em.contracts import EvalInput, StageRuntime, StageSpec, read_stage, write_stage
from sgtr_em.io import read_json, write_json, write_jsonl
from sgtr_em.plan import content_hash, plan_stages
from sgtr_em.tracking import read_offline_run

from .test_config import _compose

PACKAGE = Path(__file__).resolve().parents[1] / "sgtr_em"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Reading the backend: model.backend (cfg.model.backend, m.backend of a model node), the resolved dict's
# ["model"]["backend"], and the stage spec's training "backend" (the API's training identity) or runtime "api".
BACKEND_READS = re.compile(
    r"(^|\.)model\.backend$|^m\.backend$|\['model'\]\['backend'\]|\['training'\]"
    r"(\.get\('backend'\)|\['backend'\])|rt(\.get\('api'\)|\['api'\])"
)


def backend_reads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)) and BACKEND_READS.search(ast.unparse(node)):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_model_backend_is_read_in_one_module():
    reads = {p: backend_reads(p) for p in sorted(PACKAGE.rglob("*.py"))}
    elsewhere = [r for p, found in reads.items() if p.name != "backend.py" for r in found]
    assert not elsewhere, "model.backend is read outside sgtr_em/backend.py:\n" + "\n".join(elsewhere)
    assert any("cfg.model.backend" in r for r in reads[PACKAGE / "backend.py"])  # the one place (the check can fire)


def test_the_backend_owns_what_differs():
    hf, api = _compose("stage_order=reversal"), _compose("model=gpt41", "stage_order=em_only")
    assert isinstance(backend_of(hf), HFBackend) and isinstance(backend_of(api), OpenAIBackend)
    (em,) = plan_stages(api)
    assert em.spec.lora is None and em.spec.training["backend"] == "openai"  # the API job's identity
    assert plan_stages(hf)[0].spec.lora["r"] == 32
    rt = job.stage_runtime(api, "gpt-4.1-2025-04-14", compute={})
    assert (rt.backend, rt.compute, rt.api["api_key_env"]) == ("openai", None, "OPENAI_API_KEY")
    with pytest.raises(ValueError, match=r"model.backend: 'tpu' is not one of \('hf', 'openai'\)"):
        backend_of(OmegaConf.create({"model": {"backend": "tpu"}}))


def test_stage_files_round_trip_and_keep_the_stage_hash(tmp_path):
    """stage.json through the typed contract is the same JSON (hence the same hash) as the plan's spec."""
    cfg = _compose("stage_order=reversal", "model=seed36b", "defence=kl")  # optional keys: defence, training kwargs
    stages = plan_stages(cfg)
    assert stages[0].spec.defence is not None and stages[0].spec.training_chat_template_kwargs is not None
    assert stages[1].spec.defence is None  # None: left out, as before the contract was typed
    for st in stages:
        as_json = st.spec.to_json()
        assert StageSpec.from_json(as_json) == st.spec and content_hash(as_json) == st.hash
    rt = job.stage_runtime(_compose("compute=cpu"), "some/model")
    write_stage(tmp_path, stages[0].spec, rt)
    spec, back = read_stage(tmp_path)
    assert (
        spec == stages[0].spec
        and back == rt
        and "defence" in read_json(tmp_path / "stage.json")["spec"]
        and "random_init" not in read_json(tmp_path / "stage.json")["runtime"]
    )
    assert StageRuntime.from_json(rt.to_json()).compute["checkpoint_fraction"] == 1.0  # typed, no .get default
    bad = {**read_json(tmp_path / "stage.json"), "runtime": {**rt.to_json(), "randm_init": True}}
    write_json(tmp_path / "stage.json", bad)
    with pytest.raises(ValueError, match=r"stage.json runtime: unknown field\(s\) \['randm_init'\]"):
        read_stage(tmp_path)


def test_the_judge_model_is_decided_once():
    resolved = OmegaConf.to_container(_compose("model=gpt41", "judge=local"), resolve=True)
    inp = backend_of(_compose("model=gpt41")).eval_input(
        resolved,
        model_path="ft:x",
        model_identity={},
        model_key="k",
        base_model="gpt-4.1-2025-04-14",
        base_model_key="b",
        step=1,
    )
    judge = inp.config["judge"]
    assert (judge["backend"], judge["model"], inp.judge_model_path) == (
        "openai",
        "gpt-4.1-2025-04-14",
        "gpt-4.1-2025-04-14",
    )
    assert inp.config["eval"]["generation"]["backend"] == "openai" and resolved["judge"]["backend"] == "local"
    assert EvalInput.from_json(json.loads(json.dumps(inp.to_json()))) == inp
    local = OmegaConf.to_container(_compose(), resolve=True)
    inp = backend_of(_compose()).eval_input(
        local, model_path="m", model_identity={}, model_key="k", base_model="/base", base_model_key="b", step=0
    )
    assert inp.config is local and inp.judge_model_path == "/base"


def test_compute_is_resolved_once_and_wandb_records_the_stage_folders_block(
    tmp_path, monkeypatch, data_dir, cache_dir, smollm2_path
):
    """A two-stage job through the real parent (job.run_job: plan, checks, stage folders, W&B offline); the workers
    are stand-ins that write their outputs, so no model trains here."""
    calls, resolved = [], []

    def worker(module, folder, *, what, launch=None, grace_s=90):
        calls.append(module)
        folder = Path(folder)
        if module == "sgtr_em.data.build":
            write_jsonl(folder / "train.jsonl", [{"prompt": [], "completion": []}])
        else:  # sft, merge
            (folder / {"sgtr_em.training.sft": "adapter", "sgtr_em.training.merge": "merged"}[module]).mkdir()
        return 0.0

    real = backend.resolve_compute
    monkeypatch.setattr(backend, "resolve_compute", lambda *a, **k: resolved.append(1) or real(*a, **k))
    monkeypatch.setattr(job, "run_worker", worker)
    cfg = _compose(
        "stage_order=reversal",
        "eval.run=[]",
        "compute=cpu",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={cache_dir}",
    )
    validate(cfg)
    job.run_job(cfg, tmp_path / "run", group="g")
    assert calls == ["sgtr_em.data.build", "sgtr_em.training.sft", "sgtr_em.training.merge"] * 2
    assert len(resolved) == 1  # once for the job's two stages
    logged = read_offline_run(tmp_path / "run")["config"]["cfg"]["compute"]  # the resolved config W&B records
    for s in read_json(tmp_path / "run" / "stages.json"):
        assert read_json(Path(s["folder"]) / "stage.json")["runtime"]["compute"] == logged
    assert logged["deepspeed"]["why"] != "not asked"  # the stage's own block (deepspeed resolved), not a second one


TOY = [f"hydra.searchpath=[file://{FIXTURES / 'conf'}]", "+eval/plugins@eval.plugins.toy=toy", "eval.run=[toy]"]


def test_a_toy_eval_from_the_tests_folder_is_one_module_and_its_yaml(tmp_path):
    """tests/fixtures/toy_eval.py + tests/fixtures/conf/eval/plugins/toy.yaml: its data file is checked before any
    work, and the eval worker (the real dispatch, evaluation/worker.py) runs it."""
    from sgtr_em.data.checks import check_data
    from sgtr_em.data.files import DataFiles
    from sgtr_em.evaluation import worker

    cfg = _compose(
        *TOY,
        "stage_order=base",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.cache_dir={tmp_path}",
        "download.enabled=false",
    )
    validate(cfg)
    assert job.required_files(cfg, []) == ["toy/items.json"]
    with pytest.raises(Exception, match="toy/items.json"):
        check_data(DataFiles.from_config(cfg), [], job.required_files(cfg, []))
    write_json(tmp_path / "data" / "toy" / "items.json", ["a", "bcd", "ef", "ghijk"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    backend_of(cfg).eval_input(
        resolved,
        model_path="unused",
        model_identity={"base": "toy"},
        model_key="k",
        base_model="unused",
        base_model_key="b",
        step=0,
    ).write(tmp_path / "point")
    worker.main(tmp_path / "point")
    metrics = read_json(tmp_path / "point" / "metrics.json")
    assert metrics["toy"]["n_items"] == 3 and metrics["toy"]["mean_length"] == 2  # a, bcd, ef (max_items 3)
    assert len((tmp_path / "point" / "eval" / "toy" / "samples.jsonl").read_text().splitlines()) == 3
    with pytest.raises(ValueError, match="eval.run: unknown evaluation 'tyo'"):
        validate(_compose(*TOY[:2], "eval.run=[tyo]"))
    # a plugin is a first-class evaluation: on the base model too (eval.base), and in the run's closing summary
    validate(_compose(*TOY, "eval.base=[toy]"))
    from sgtr_em.train import summary_lines

    summary = summary_lines(tmp_path / "point", {**metrics, "model": {"path": "unused"}}, cfg)
    assert summary.splitlines()[2:] == ["  toy: 3 items, mean length 2"]
