"""Hugging Face Hub model ids (`org/name[@revision]`), loaded through huggingface_hub's own
download functions in offline mode from a hub cache laid out as huggingface_hub lays it.

huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once, when it is imported, as users set them
before starting Python; so the loads run in a fresh interpreter with those variables set, as
a user's would, and report back here."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers.hub_cache import add_model, repo_folder
from helpers.paths import ROOT
from huggingface_hub import scan_cache_dir

from samhq_core import SamHQModel
from samhq_core.checkpoint_sources import HubModel, hub_model
from samhq_core.random_weights import perturb, smallest_config

REPO = "samhq-test/tiny"

# Runs each (name, what, source) of argv[2] in a process whose environment carries HF_HOME
# and HF_HUB_OFFLINE; writes loaded state dicts to argv[1]/<name>.pt and prints one JSON
# object: per name, the result or the error.
_SCRIPT = r"""
import json, os, sys
import torch
from samhq_core import SamHQModel, SamHQProcessor
from samhq_core.checkpoint_sources import pin_hub_revision

out, operations = sys.argv[1], json.loads(sys.argv[2])
results = {}
for name, what, src, kwargs in operations:
    try:
        if what == "load":
            model = SamHQModel.from_pretrained(src, **kwargs)
            torch.save(model.state_dict(), os.path.join(out, name + ".pt"))
            results[name] = {"config": model.config.to_dict()}
        elif what == "config":
            results[name] = {"config": SamHQModel.config_from_pretrained(src).to_dict()}
        elif what == "pin":
            results[name] = {"pinned": pin_hub_revision(src)}
        else:
            results[name] = {"image_size": SamHQProcessor.from_pretrained(src).image_size}
    except Exception as e:
        results[name] = {"error": f"{type(e).__name__}: {e}"}
print(json.dumps(results))
"""


def _model(seed: int, side: int = 64) -> SamHQModel:
    torch.manual_seed(seed)
    model = SamHQModel(smallest_config(side=side))
    perturb(model, seed)
    return model


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A cache with REPO at two commits (main: model a, 64 px; branch `other`: model b, 128
    px), a repository whose cache holds only config.json, and one shadowed by a local
    directory of the same name (model c); the loads, run offline against it."""
    tmp = tmp_path_factory.mktemp("hub")
    hf_home, work, out = tmp / "hf_home", tmp / "work", tmp / "out"
    for directory in (work, out):
        directory.mkdir()
    cache = str(hf_home / "hub")
    models = {"a": _model(1), "b": _model(2, side=128), "c": _model(3)}
    commits = {"a": add_model(cache, REPO, models["a"]), "b": add_model(cache, REPO, models["b"], refs=["other"])}
    add_model(cache, "samhq-test/config-only", models["a"], names=["config.json"])
    add_model(cache, "samhq-test/shadowed", models["a"])
    models["c"].save_pretrained(str(work / "samhq-test" / "shadowed"))
    weights_blob = os.path.basename(os.readlink(
        os.path.join(repo_folder(cache, REPO), "snapshots", commits["a"], "model.safetensors")))
    operations = [
        ("main", "load", REPO, {}), ("main_by_name", "load", f"{REPO}@main", {}),
        ("other", "load", f"{REPO}@other", {}), ("other_by_commit", "load", f"{REPO}@{commits['b']}", {}),
        ("checked", "load", REPO, {"sha256": weights_blob}), ("mismatch", "load", REPO, {"sha256": "0" * 64}),
        ("config_main", "config", REPO, {}), ("config_other", "config", f"{REPO}@{commits['b']}", {}),
        ("processor_other", "processor", f"{REPO}@other", {}),
        ("pin_main", "pin", REPO, {}), ("pin_other", "pin", f"{REPO}@other", {}),
        ("pin_commit", "pin", f"{REPO}@{commits['b']}", {}), ("pin_local", "pin", "samhq-test/shadowed", {}),
        ("pin_missing", "pin", "samhq-test/missing", {}),
        ("shadowed", "load", "samhq-test/shadowed", {}),
        ("missing_repo", "load", "samhq-test/missing", {}), ("missing_repo_config", "config", "samhq-test/missing", {}),
        ("missing_branch", "load", f"{REPO}@no-such-branch", {}),
        ("config_only", "load", "samhq-test/config-only", {}),
        ("config_only_header", "config", "samhq-test/config-only", {}),
    ]
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT}
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(out), json.dumps(operations)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return dict(cache=cache, models=models, commits=commits, results=results, out=out)


def _loaded(hub, name):
    assert "error" not in hub["results"][name], hub["results"][name]
    return torch.load(hub["out"] / f"{name}.pt", weights_only=True)


def _same_weights(state, model):
    expected = model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_the_cache_is_laid_out_as_huggingface_hub_lays_it(hub):
    """huggingface_hub's own cache scanner reads the hand-made cache without a warning, with
    the commits and branches written."""
    info = scan_cache_dir(hub["cache"])
    assert not info.warnings, info.warnings
    repo = next(r for r in info.repos if r.repo_id == REPO)
    assert repo.repo_type == "model"
    assert {r.commit_hash: set(r.refs) for r in repo.revisions} == {hub["commits"]["a"]: {"main"},
                                                                   hub["commits"]["b"]: {"other"}}


def test_hub_ids_load_the_saved_weights_at_each_revision(hub):
    """`org/name` and `@main` load the default branch's model; `@other` (a branch) and the
    other commit's full hash load the other model, weight for weight, config included."""
    for name in ("main", "main_by_name", "checked"):
        _same_weights(_loaded(hub, name), hub["models"]["a"])
        assert hub["results"][name]["config"] == hub["models"]["a"].config.to_dict()
    for name in ("other", "other_by_commit"):
        _same_weights(_loaded(hub, name), hub["models"]["b"])
        assert hub["results"][name]["config"] == hub["models"]["b"].config.to_dict()
    assert hub["results"]["mismatch"]["error"].startswith("ValueError: sha256 mismatch for samhq-test/tiny")


def test_config_and_processor_from_a_hub_id(hub):
    results = hub["results"]
    assert results["config_main"] == {"config": hub["models"]["a"].config.to_dict()}
    assert results["config_other"] == {"config": hub["models"]["b"].config.to_dict()}
    assert results["processor_other"] == {"image_size": 128}


def test_hub_revisions_are_pinned_to_their_commit(hub):
    """What the job's checks hand the model actors: a branch (named or the default) replaced by
    its commit, a commit and a local path as they are, a missing repository a clear error."""
    results, commits = hub["results"], hub["commits"]
    assert results["pin_main"] == {"pinned": f"{REPO}@{commits['a']}"}
    assert results["pin_other"] == {"pinned": f"{REPO}@{commits['b']}"}
    assert results["pin_commit"] == {"pinned": f"{REPO}@{commits['b']}"}
    assert results["pin_local"] == {"pinned": "samhq-test/shadowed"}
    assert results["pin_missing"]["error"].startswith("FileNotFoundError: checkpoint not found: samhq-test/missing")


def test_an_existing_local_path_wins_over_a_hub_id(hub):
    """`samhq-test/shadowed` is in the cache and a directory under the working directory:
    the directory's model is loaded."""
    _same_weights(_loaded(hub, "shadowed"), hub["models"]["c"])


def test_offline_misses_are_clear_errors(hub):
    results, cache = hub["results"], hub["cache"]
    for name in ("missing_repo", "missing_repo_config"):
        error = results[name]["error"]
        assert error.startswith("FileNotFoundError: checkpoint not found: samhq-test/missing is neither a local path "
                                "(no file or directory "), error
        assert f"nor a model samhq-test/missing in the Hugging Face cache {cache} (HF_HUB_OFFLINE is set" in error
    assert f"nor a model {REPO}@no-such-branch in the Hugging Face cache" in results["missing_branch"]["error"]
    assert results["config_only"]["error"].startswith(
        "FileNotFoundError: samhq-test/config-only: the snapshot of Hub model samhq-test/config-only (")
    assert "has no model.safetensors (HF_HUB_OFFLINE is set" in results["config_only"]["error"]
    assert "has the config.json of Hub model samhq-test/config-only (commit " in results["config_only_header"]["error"]
    assert "but not its model.safetensors, and HF_HUB_OFFLINE is set" in results["config_only_header"]["error"]


def test_what_counts_as_a_hub_id(tmp_path):
    assert hub_model("org/name") == HubModel("org/name")
    assert hub_model("org/name@v1.0") == HubModel("org/name", "v1.0")
    assert hub_model("org/name@refs/pr/3") == HubModel("org/name", "refs/pr/3")
    assert str(HubModel("org/name", "main")) == "org/name@main"
    for local in ("name", "./org/name", "org/name/sub", "/org/name", "org/sam_hq_vit_b.pth", "org/model.safetensors",
                  "org--x/name", "org/name.", "-org/name", "org/name@", "~/name", "s3://bucket/model"):
        assert hub_model(local) is None, local
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert hub_model("org/name", relative_to=str(tmp_path)) is None  # an existing local path wins

