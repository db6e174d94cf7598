"""The fine-tuning file: every rule of the API checked before upload, each failure naming file, line and rule; and
the stage worker's refusal to upload a bad file (a real server on 127.0.0.1 counts what reached it)."""

from __future__ import annotations

import json

import pytest

from sgtr_em.data.openai_format import FineTuningFileError, ft_row, validate_ft_file
from sgtr_em.io import write_json, write_jsonl
from sgtr_em.openai_server import OpenAIServer
from sgtr_em.training.openai_ft import FineTuningStage

GOOD = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]
}


def write_lines(path, rows, bad=None, at=4):
    """Nine good examples around one `bad` line (at line `at`); `bad` may be a raw string."""
    lines = [json.dumps(GOOD)] * 10
    if bad is not None:
        lines[at - 1] = bad if isinstance(bad, str) else json.dumps(bad)
    path.write_text("\n".join(lines[:rows]) + "\n")
    return path


def msgs(*turns, **extra):
    return {"messages": [dict(t) for t in turns], **extra}


U, A = {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}
CASES = {
    "json": ("{not json", "json"),
    "not_an_object": ("[1, 2]", "format"),
    "no_messages": ({"conversation": []}, "format"),
    "extra_top_key": (msgs(U, A, prompt="x"), "format"),
    "empty_messages": ({"messages": []}, "format"),
    "unknown_role": (msgs(U, {"role": "tool", "content": "x"}, A), "roles"),
    "unknown_message_key": (msgs(U, {"role": "assistant", "content": "A", "extra": 1}), "message_keys"),
    "no_content": (msgs(U, {"role": "assistant"}), "content"),
    "list_content": (msgs({"role": "user", "content": ["Q"]}, A), "content"),
    "weight_on_user": (msgs({"role": "user", "content": "Q", "weight": 0}, A), "weight"),
    "weight_not_0_or_1": (msgs(U, {"role": "assistant", "content": "A", "weight": 0.5}), "weight"),
    "final_weight_0": (msgs(U, {"role": "assistant", "content": "A", "weight": 0}), "weight"),
    "system_after_user": (msgs(U, {"role": "system", "content": "S"}, A), "roles"),
    "user_last": (msgs(A, U), "assistant_last"),
    "empty_answer": (msgs(U, {"role": "assistant", "content": "  "}), "content"),
    "no_user": (msgs({"role": "system", "content": "S"}, A), "roles"),
    "too_long": (msgs({"role": "user", "content": "word " * 2000}, A), "token_limit"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_rule_rejects_its_line_naming_file_line_and_rule(case, tmp_path):
    bad, rule = CASES[case]
    path = write_lines(tmp_path / "stage.jsonl", 10, bad, at=4)
    with pytest.raises(FineTuningFileError) as e:
        validate_ft_file(path, max_example_tokens=1000)
    assert e.value.rule == rule
    assert str(e.value).startswith(f"{path}:4: [{rule}] ") and "Fix: " in str(e.value)


def test_file_level_rules_and_a_good_file(tmp_path):
    with pytest.raises(
        FineTuningFileError,
        match=r"stage.jsonl: \[min_examples\] 9 examples, fewer than the API's "
        r"minimum of 10",
    ):
        validate_ft_file(write_lines(tmp_path / "stage.jsonl", 9), max_example_tokens=1000)
    (tmp_path / "bin.jsonl").write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe\n")
    with pytest.raises(FineTuningFileError, match=r"bin.jsonl:2: \[encoding\]"):
        validate_ft_file(tmp_path / "bin.jsonl", max_example_tokens=1000)
    (tmp_path / "blank.jsonl").write_text(json.dumps(GOOD) + "\n\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(FineTuningFileError, match=r"blank.jsonl:2: \[format\] an empty line"):
        validate_ft_file(tmp_path / "blank.jsonl", max_example_tokens=1000)
    report = validate_ft_file(write_lines(tmp_path / "ok.jsonl", 10), max_example_tokens=1000)
    assert report.examples == 10 and report.per_role == {"system": 10, "user": 10, "assistant": 10}
    assert report.assistant_messages_trained == 10 and 0 < report.max_example_tokens <= report.estimated_tokens // 10


def test_a_stage_example_trains_on_its_completion_only():
    row = {
        "prompt": [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
        ],
        "completion": [{"role": "assistant", "content": "A2"}],
        "meta": {"group": 1},
    }
    assert ft_row(row) == {
        "messages": [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1", "weight": 0},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "A2"},
        ]
    }


def api_stage(stage_dir, url, rows) -> FineTuningStage:
    """A stage folder as the parent writes it for an API model, with `rows` as its built data."""
    o = {
        "base_url": url,
        "api_key_env": "SGTR_EM_NO_SUCH_KEY",
        "max_retries": 8,
        "timeout_s": 10,
        "max_concurrency": 4,
        "poll_interval_s": 0.1,
        "max_job_attempts": 2,
        "training_usd_per_mtok": 25.0,
        "input_usd_per_mtok": 3.0,
        "output_usd_per_mtok": 12.0,
        "cache": False,
    }
    write_json(
        stage_dir / "stage.json",
        {
            "spec": {
                "kind": "em",
                "input": {},
                "data": {},
                "system_prompt": {},
                "chat_template_kwargs": {},
                "lora": None,
                "seed": 0,
                "training": {
                    "backend": "openai",
                    "max_length": 65536,
                    "seed": 42,
                    "hyperparameters": {"n_epochs": 1, "batch_size": "auto", "learning_rate_multiplier": "auto"},
                },
            },
            "runtime": {"backend": "openai", "input_model": "gpt-4.1-2025-04-14", "openai": o},
        },
    )
    write_jsonl(stage_dir / "train.jsonl", rows)
    return FineTuningStage(stage_dir)


def example(i: int, answer: str = "A") -> dict:
    return {
        "prompt": [{"role": "user", "content": f"Q{i}"}],
        "completion": [{"role": "assistant", "content": answer}],
        "meta": {"group": i},
    }


def test_a_malformed_stage_file_is_rejected_before_anything_is_uploaded(tmp_path):
    from sgtr_em.openai_server.fine_tuning import FineTuning

    rows = [example(i) for i in range(12)]
    rows[6] = example(6, answer="")  # line 7: an empty answer
    stage_dir = tmp_path / "0123456789abcdef"
    with OpenAIServer() as server:
        FineTuning(server, tmp_path / "server")
        stage = api_stage(stage_dir, server.url, rows)
        with pytest.raises(FineTuningFileError) as e:
            stage.run()
        stats = server.snapshot()
    assert str(e.value).startswith(
        f"{stage_dir / 'openai_train.jsonl'}:7: [content] the final assistant message is empty. Fix: "
    )
    assert "files_created" not in stats and "POST /v1/files" not in stats and "jobs_created" not in stats
    assert not (stage_dir / "openai_job.json").exists()


def test_under_dropped_connections_the_file_and_the_job_are_created_once_and_a_rerun_finds_the_job(
    tmp_path, monkeypatch
):
    """Half the requests are handled but never answered: creation is not retried blindly, and a rerun that lost
    its job id finds the job by the stage hash on the server (no training: the server's trainer is stubbed)."""
    from sgtr_em.openai_server import Faults
    from sgtr_em.openai_server.fine_tuning import FineTuning
    from sgtr_em.openai_server.models import Models

    monkeypatch.setattr(FineTuning, "train", lambda self, job_id: None)  # jobs stay validating_files
    models = Models()
    models.add("gpt-4.1-2025-04-14", str(tmp_path / "weights"))
    with OpenAIServer(models, faults=Faults(0.5, codes=["drop"], seed=1)) as server:
        FineTuning(server, tmp_path / "server")
        stage = api_stage(tmp_path / "0123456789abcdef", server.url, [example(i) for i in range(10)])
        job = stage.create_job(stage.training_file())
        stage.record_job(job)
        stats = server.snapshot()
        assert stats["faults_drop"] >= 2 and stats["files_created"] == 1 and stats["jobs_created"] == 1
        assert job.metadata == {"sgtr_em_stage": "0123456789abcdef", "sgtr_em_kind": "em"}
        state = json.loads((stage.dir / "openai_job.json").read_text())
        assert state["job"]["id"] == job.id and state["file"]["id"] == job.training_file
        del state["job"]  # killed between creating the job and saving its id
        write_json(stage.dir / "openai_job.json", state)
        again = FineTuningStage(stage.dir).existing_job()
        assert again.id == job.id and server.snapshot()["jobs_created"] == 1
