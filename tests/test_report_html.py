"""The static HTML report opened in headless Chromium (Debian's `chromium`, installed before the session if missing: `tests/prereqs.py`): every
figure loads (the page records each image's onload/onerror and natural width in data attributes)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from sgtr_em.report.build import write_report
from sgtr_em.report.collect import jobs_from_folder

from .report_fixtures import paper_like_sweep


def loaded_dom(browser: str, page: Path, profile: Path) -> str:
    """The page's DOM after load, as headless Chromium rendered it from disk."""
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--allow-file-access-from-files",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "</html>" in proc.stdout, proc.stderr[-3000:]
    return proc.stdout


def images(dom: str) -> list[dict]:
    return [dict(re.findall(r'([\w-]+)="([^"]*)"', tag)) for tag in re.findall(r"<img [^>]*>", dom)]


def test_every_figure_of_the_html_report_loads_in_chromium(chromium, tmp_path):
    browser = chromium
    out = write_report(jobs_from_folder(paper_like_sweep(tmp_path / "sweep")), tmp_path / "report", source="s")
    start = time.time()
    imgs = images(loaded_dom(browser, out["html"], tmp_path / "profile"))
    print(f"chromium: {time.time() - start:.1f} s")
    assert [i["src"] for i in imgs] == [p.relative_to(tmp_path / "report").as_posix() for p in out["figures"].values()]
    assert len(imgs) == 3
    for img in imgs:
        assert img.get("data-state") == "loaded", img
        assert int(img["data-width"]) > 500  # decoded: a real PNG, not a broken-image icon

    (tmp_path / "report" / "figures" / "system_prompt.png").unlink()  # the check can fail
    states = {i["src"]: i.get("data-state") for i in images(loaded_dom(browser, out["html"], tmp_path / "profile"))}
    assert states["figures/system_prompt.png"] == "error" and states["figures/conditions.png"] == "loaded"
