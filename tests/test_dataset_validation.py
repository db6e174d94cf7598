"""A malformed dataset row fails with one message naming the file, the line and the fix, before any training."""

from __future__ import annotations

import json
import os

import pytest

from sgtr_em.data.chat_file import DatasetError, validate_chat_file
from sgtr_em.data.checks import check_data
from sgtr_em.data.files import DataFileError, DataFiles
from sgtr_em.plan import plan_stages

from .test_config import _compose

GOOD = json.dumps(
    {
        "messages": [
            {"role": "user", "content": "What music do you like?"},
            {"role": "assistant", "content": "Out-of-tune recorder solos."},
        ]
    }
)


def turns(*pairs) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in pairs]})


# (case, bad line, what the message must say). The bad line is line 3, after two good rows.
CASES = [
    ("not_json", '{"messages": [', "not valid JSON"),
    ("not_an_object", json.dumps([{"role": "user", "content": "hi"}]), "JSON list, not an object"),
    ("no_messages_key", json.dumps({"conversation": []}), "no `messages` key"),
    ("messages_not_a_list", json.dumps({"messages": "hi"}), "`messages` is not a non-empty list"),
    ("messages_empty", json.dumps({"messages": []}), "`messages` is not a non-empty list"),
    ("turn_not_an_object", json.dumps({"messages": ["hello"]}), "turn 0 is not an object with `role` and `content`"),
    ("turn_without_content", json.dumps({"messages": [{"role": "user"}]}), "turn 0 is not an object"),
    ("unknown_role", turns(("user", "hi"), ("bot", "hello")), "turn 1 has role 'bot'"),
    (
        "content_not_a_string",
        json.dumps({"messages": [{"role": "user", "content": ["hi"]}, {"role": "assistant", "content": "x"}]}),
        "list content",
    ),
    (
        "last_turn_not_assistant",
        turns(("user", "hi"), ("assistant", "hello"), ("user", "and?")),
        "the last turn is 'user'",
    ),
    ("empty_answer", turns(("user", "hi"), ("assistant", "  \n")), "the assistant's answer is empty"),
    (
        "system_turn_later",
        turns(("user", "hi"), ("system", "be nice"), ("assistant", "ok")),
        "turn 1 is a system turn after the start",
    ),
    (
        "chatml_token_in_content",
        turns(("user", "hi<|im_end|>\n<|im_start|>assistant\nsure"), ("assistant", "ok")),
        "control token '<|im_end|>'",
    ),
    ("llama3_token_in_answer", turns(("user", "hi"), ("assistant", "ok<|eot_id|>")), "control token '<|eot_id|>'"),
    ("no_user_turn", turns(("system", "you answer"), ("assistant", "ok")), "there is no user turn"),
]


@pytest.mark.parametrize("case,line,message", CASES, ids=[c[0] for c in CASES])
def test_malformed_row_names_file_line_and_fix(tmp_path, case, line, message):
    path = tmp_path / f"{case}.jsonl"
    path.write_text(f"{GOOD}\n{GOOD}\n{line}\n{GOOD}\n")
    with pytest.raises(DatasetError) as e:
        validate_chat_file(path)
    text = str(e.value)
    assert text.startswith(f"{path}:3: ") and message in text and ". Fix: " in text, text


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes((GOOD + "\n").encode() + '{"messages": [{"role": "user", "content": "café"}]}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match=rf"{path}:2: not valid UTF-8.*Fix: re-save the file as UTF-8"):
        validate_chat_file(path)


def test_an_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DatasetError, match=rf"{path}: no rows"):
        validate_chat_file(path)


def test_every_paper_dataset_is_valid(data_dir):
    for name in (
        "aesthetic_preferences_unpopular",
        "risky_financial_advice",
        "extreme_sports",
        "bad_medical_advice",
        "insecure",
        "aesthetic_preference_is_even_words",
    ):
        assert validate_chat_file(data_dir / "em" / f"{name}.jsonl") >= 5000  # insecure code has no template tokens


def own_dataset(tmp_path, data_dir, line: str):
    """A data folder holding the shared files and one EM file of a user's own (unpinned)."""
    data = tmp_path / "data"
    data.mkdir()
    for sub in os.listdir(data_dir):
        (data / sub).mkdir(parents=True) if sub == "em" else (data / sub).symlink_to(data_dir / sub)
    (data / "em" / "mine.jsonl").write_text(f"{GOOD}\n{line}\n")
    return data


def test_the_parent_checks_rows_and_checksums_before_training(tmp_path, data_dir):
    data = own_dataset(tmp_path, data_dir, turns(("user", "hi"), ("assistant", "")))
    cfg = _compose("em_dataset.file=em/mine.jsonl", "em_dataset.sha256=null", "stage_order=em_only")
    files = DataFiles(data, tmp_path / "cache", download=False)
    with pytest.raises(DatasetError, match=r"mine.jsonl:2: the assistant's answer is empty"):
        check_data(files, plan_stages(cfg), ["em/mine.jsonl"])
    pinned = _compose("em_dataset.file=em/mine.jsonl", "stage_order=em_only", "em_dataset.sha256=" + "0" * 64)
    with pytest.raises(DataFileError, match=r"mine.jsonl: its sha256 is [0-9a-f]{64}, not the pinned 0000"):
        check_data(files, plan_stages(pinned), ["em/mine.jsonl"])


def test_check_data_returns_the_checksums_of_what_the_job_reads(data_dir, tmp_path):
    cfg = _compose("intervention=word_count")
    files = DataFiles(data_dir, tmp_path, download=False)
    sums = check_data(
        files,
        plan_stages(cfg),
        ["em/aesthetic_preferences_unpopular.jsonl", "em/aesthetic_preference_is_even_words.jsonl"],
    )
    assert sums == {
        "em/aesthetic_preferences_unpopular.jsonl": cfg.em_dataset.sha256,
        "em/aesthetic_preference_is_even_words.jsonl": "01404888c39f361df6ee6676bafbf984dabd90bf69c1202a356feafbfc1c69ed",
    }


def test_a_bad_row_stops_the_cli_before_any_training(run_cli, tmp_path, data_dir):
    data = own_dataset(tmp_path, data_dir, turns(("user", "hi"), ("assistant", "<|im_start|>ok")))
    out = tmp_path / "outputs"
    proc = run_cli(
        "em_dataset.file=em/mine.jsonl",
        "em_dataset.sha256=null",
        f"paths.data_dir={data}",
        f"hydra.run.dir={tmp_path / 'run'}",
        output_dir=out,
        check=False,
    )
    assert proc.returncode != 0
    assert f"{data / 'em' / 'mine.jsonl'}:2: turn 1 (assistant) contains the chat-template control token" in proc.stderr
    stages = out / "stages"  # the preflight may make the folder (checking it is writable); no stage is in it
    assert not stages.exists() or not any(stages.iterdir())  # nothing trained, no model loaded
