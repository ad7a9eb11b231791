"""The README's code blocks, run as written, in document order, in a copy of the repository
(so that what they write lands there): the bash blocks in one bash session, each run of
consecutive Python blocks as one script. A block preceded by `<!-- readme-test: skip (why) -->`
is not run; the reason is required. `text` blocks (the layout's tree) are not code.

The `ray job submit` block starts a Ray head with `ray start`: the whole session runs in a
process session of its own, and the test ends exactly that session's processes afterwards
(tests/helpers/owned_processes.py), whatever the blocks left running."""

import os
import re
import shutil
import tempfile
import time
from typing import List, Optional, Tuple

import pytest
from helpers.owned_processes import OwnedProcess, session_members
from helpers.paths import ROOT

SKIP = re.compile(r"<!-- readme-test: skip \((?P<reason>[^)]+)\) -->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")
# Run by CI (.ci/run) around this test: the set-up, lint and type checks, and this very test run.
ALREADY_RUN = {"bash scripts/setup.sh --dev --browser", "python3 -m pytest -q", "python3 -m ruff check . && python3 -m mypy"}


def code_blocks(text: str) -> List[Tuple[str, str, Optional[str]]]:
    """(language, code, skip reason or None) for every fenced block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        previous = next((line for line in reversed(lines[:i]) if line.strip()), "")
        skip = SKIP.match(previous)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        blocks.append((match.group(1), "\n".join(lines[i + 1:end]), skip.group("reason") if skip else None))
        i = end + 1
    return blocks


def test_every_block_is_run_or_says_why_not():
    blocks = code_blocks(open(os.path.join(ROOT, "README.md")).read())
    assert len(blocks) >= 8
    for language, code, reason in blocks:
        assert language in ("bash", "python", "text"), f"untagged or unknown block language {language!r}:\n{code}"
        assert reason is None or len(reason) > 10, code


@pytest.mark.cluster
def test_readme_blocks_run_as_written(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".git", ".venv*", "demo_output", "__pycache__", "*.egg-info",
                                                              ".pytest_cache", "build"))
    script = ["set -euo pipefail"]
    python: List[str] = []

    def flush_python() -> None:
        if python:
            path = tmp_path / f"readme_python_{len(script)}.py"
            path.write_text("\n\n".join(python) + "\n")
            script.append(f"echo '--- README python blocks ({path.name})'\npython {path}")
            python.clear()

    for language, code, reason in code_blocks((repo / "README.md").read_text()):
        if reason is not None or code.strip() in ALREADY_RUN or language == "text":  # text: a picture, not code
            continue
        if language == "python":
            python.append(code)
            continue
        flush_python()
        script.append(f"echo '--- README block: {code.splitlines()[0][:80]}'\n{code}")
    flush_python()
    (tmp_path / "readme.sh").write_text("\n".join(script) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # Ray's state (sessions, the address file `ray.init()` looks for) in a directory of the
    # test's own, short for Ray's socket paths: nothing of it outlives the test or reaches
    # another Ray user of this machine.
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env.update(PYTHONPATH=str(repo), RAY_TMPDIR=ray_tmp)
    session = OwnedProcess(["bash", str(tmp_path / "readme.sh")], env=env, cwd=repo)
    try:
        deadline = time.time() + 900
        while session.process.poll() is None and time.time() < deadline:
            time.sleep(1)
        output = session.output_tail(200_000)
        (tmp_path / "output.log").write_text(output)
        assert session.process.returncode == 0, output[-20000:]
    finally:
        session.stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not session_members(session.session_id)
    # What the blocks produced, checked beyond their exit status:
    assert re.search(r"rows in: 8, rows out: 8", output), output  # the demo, the example run and the submitted job
    assert output.count("rows in: 8, rows out: 8") >= 3, output
    assert "Job 'raysubmit_" in output and "succeeded" in output, output
    assert (repo / "demo_output" / "example_instances.json").exists()
    assert (repo / "demo_output" / "finetuned" / "model.safetensors").exists()
    # the labelling loop: corrections imported, fine-tuned by two Ray Train workers, annotated again
    assert "wrote demo_output/corrected.parquet: 8 rows" in output, output
    assert "Trained by 2 Ray Train workers" in (repo / "demo_output" / "finetuned_corrections" / "finetune_report.md").read_text()
    assert (repo / "demo_output" / "after_corrections" / "_SUCCESS").exists()
    assert "torch.Size([1, 3, 256, 256]) torch.Size([1, 1, 3])" in output
