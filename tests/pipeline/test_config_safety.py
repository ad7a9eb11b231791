"""Config files from untrusted hands: duplicate keys, alias bombs, oversized files and long
values are refused with short messages, quickly and in bounded memory."""

import json
import subprocess
import sys
import textwrap

import pytest
import yaml
from helpers.paths import ROOT

from pipeline.config import ConfigError, load_config, parse_config, read_yaml

CONFIG = """\
input:
  path: in
  id_column: id
  image_column: img
  boxes_column: boxes
output:
  path: out
model:
  checkpoint: ckpt.pth
"""
# 9 levels of 9 aliases: 200 bytes that expand to 9**9 (387 million) strings.
BILLION_LAUGHS = 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))


def problems_of(tmp_path, text, overrides=()):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(str(path), list(overrides))
    return err.value.problems


def test_a_key_twice_is_refused_with_both_lines(tmp_path):
    text = CONFIG.replace("  id_column: id\n", "  id_column: id\n  path: again\n") + "input:\n  path: third\n"
    assert problems_of(tmp_path, text) == [
        f"'input' appears twice (lines 1 and 11) in {tmp_path / 'job.yaml'}: keep one",
        f"'input.path' appears twice (lines 2 and 4) in {tmp_path / 'job.yaml'}: keep one"]
    assert problems_of(tmp_path, CONFIG + "compute:\n  batch_size: 2\n  batch_size: 4\n  batch_size: 8\n") == [
        f"'compute.batch_size' appears 3 times (lines 11, 12 and 13) in {tmp_path / 'job.yaml'}: keep one"]
    (problem,) = problems_of(tmp_path, CONFIG, ["input.allowed_uri_prefixes=[{a: 1, a: 2}]"])
    assert problem == "'[0].a' appears twice (lines 1 and 1) in --set 'input.allowed_uri_prefixes=[{a: 1, a: 2}]': keep one"


def test_anchors_may_be_reused_and_merged_over(tmp_path):
    """Reusing a block is what anchors are for; a merge (<<) may override the keys it brings."""
    path = tmp_path / "job.yaml"
    path.write_text(CONFIG.replace("  path: out\n", "  path: &where s3://bucket/out\n  checkpoint_path: *where\n")
                    + "storage: &storage {region: eu-west-1, anonymous: true}\n"
                    + "finetune_storage: &other {<<: *storage, region: us-east-1}\n")
    data = read_yaml(str(path))
    assert data["output"]["checkpoint_path"] == "s3://bucket/out"
    assert data["finetune_storage"] == {"region": "us-east-1", "anonymous": True}
    path.write_text(path.read_text() + "other: {<<: *storage, region: a, region: b}\n")
    with pytest.raises(ConfigError, match=r"^invalid config:\n  - 'other.region' appears twice \(lines 13 and 13\)"):
        read_yaml(str(path))


def test_billion_laughs_is_refused_quickly_in_bounded_memory(tmp_path):
    """In a process of its own whose address space may grow 512 MiB at most (expanding the
    document takes gigabytes)."""
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    script = textwrap.dedent(f"""
        import json, resource, time
        from pipeline.config import ConfigError, read_yaml
        with open("/proc/self/status") as f:
            size = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + (512 << 20), resource.RLIM_INFINITY))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.monotonic()
        try:
            read_yaml({str(path)!r})
            message = None
        except ConfigError as e:
            message = str(e)
        print(json.dumps({{"message": message, "seconds": time.monotonic() - start,
                          "grown_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["message"] is not None and "holds over 100,000 values" in result["message"]
    assert len(result["message"]) < 2000 and result["seconds"] < 2 and result["grown_kib"] < 200 << 10


def test_an_oversized_file_is_refused(tmp_path):
    text = CONFIG + "# padding\n" * ((2 << 20) // 10)
    assert problems_of(tmp_path, text) == [
        f"{tmp_path / 'job.yaml'}: larger than 1.0 MiB, the most a config file may be (a config is a few KiB); "
        "check that this is the config file"]


@pytest.mark.parametrize("text, problem", [
    ("a: &a [1, *a]\n", "an alias (*name) inside its own anchor's value, at line 1; a config cannot contain itself"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested hundreds of levels deep; a config needs a few"),
    ("a: " + "1" * 5000 + "\n", "not valid YAML: line 1, column 4: a number longer than 100 characters; quote it"),
    ("a: 1" + ":1" * 20000 + "\n", "not valid YAML: line 1, column 4: a number longer than 100 characters; quote it"),
    ("a: *" + "x" * 100_000 + "\n", "not valid YAML: line 1, column 4: found undefined alias 'xxxx"),
])
def test_documents_no_config_needs_are_refused_with_a_short_message(tmp_path, text, problem):
    (found,) = problems_of(tmp_path, text)
    assert found.startswith(f"{tmp_path / 'job.yaml'}: {problem}") and len(found) < 500


LONG = "x" * 100_000


def with_long(section, key):
    data = yaml.safe_load(CONFIG)
    data.setdefault(section, {})[key] = LONG
    return data


@pytest.mark.parametrize("data, start", [
    (with_long("compute", "batch_size"), "compute.batch_size: expected an integer, got 'xxxx"),
    (with_long("model", "dtype"), "model.dtype: must be one of 'float32' or 'bfloat16', got 'xxxx"),
    (with_long("model", "variant"), "model.variant: must be one of "),
    (with_long("storage", "endpoint_url"), "storage.endpoint_url: expected http://host[:port] or https://host[:port], "
                                           "got 'xxxx"),
    (with_long("input", "passthrough_columns"), "input.passthrough_columns: expected a list, got 'xxxx"),
    (with_long("input", LONG), "input: unknown key 'xxxx"),
    ({**yaml.safe_load(CONFIG), LONG: {}}, "unknown section 'xxxx"),
])
def test_a_long_value_is_clipped_in_its_message(data, start):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    (problem,) = err.value.problems
    assert problem.startswith(start) and "... (100002 chars)" in problem and len(problem) < 500


def test_a_long_override_is_clipped_in_its_message(tmp_path):
    (problem,) = problems_of(tmp_path, CONFIG, [f"compute.batch_size={LONG}"])
    assert problem.startswith("compute.batch_size: expected an integer, got 'xxxx") and len(problem) < 500
    (problem,) = problems_of(tmp_path, CONFIG, [f"compute.{LONG}"])
    assert problem.startswith("--set 'compute.xxxx") and problem.endswith(": expected key.sub=value")
    assert len(problem) < 500
