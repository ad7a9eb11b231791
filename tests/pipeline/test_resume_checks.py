"""A run that continues an output (`output.mode: resume`, `--retry-errors`) sees what changed
since the run that wrote it: input files changed in place, added or gone and weights
replaced at the same path are refused, naming them; a checkpoint entry that cannot be read
is named with what to do; entries listing ids the input does not hold are refused; duplicate
ids are refused before any work in every mode. All through `validate`, which runs the same
plan as `run` before Ray starts."""

import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers.pipeline_data import sample_rows, write_rows

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.job.plan import plan_job
from pipeline.output import JobDescription, Manifest, config_digest


class EarlierRun:
    """An input of two files, a checkpoint of our own (so that it can be replaced), and an
    output whose description a run wrote, with a checkpoint entry listing the first file's ids."""

    def __init__(self, tmp_path, checkpoint) -> None:
        self.tmp = tmp_path
        self.input = tmp_path / "input"
        self.input.mkdir()
        self.rows = sample_rows(num_good=4)[:4]
        write_rows(str(self.input / "part-0.parquet"), self.rows[:2])
        write_rows(str(self.input / "part-1.parquet"), self.rows[2:])
        self.checkpoint = tmp_path / "model.pth"
        shutil.copy(checkpoint, self.checkpoint)
        self.output = tmp_path / "output"
        self.config = {
            "input": {"path": str(self.input), "id_column": "id", "image_column": "image", "boxes_column": "boxes"},
            "output": {"path": str(self.output)},
            "model": {"checkpoint": str(self.checkpoint)},
        }
        self.path = tmp_path / "job.yaml"
        self.path.write_text(yaml.safe_dump(self.config))
        plan = plan_job(load_config(str(self.path)))
        plan.output.write_description(JobDescription(plan.config, plan.scan.num_rows, plan.fingerprint))
        self.plan = plan
        self.entry(["good0", "good1"])
        self.config["output"]["mode"] = "resume"
        self.path.write_text(yaml.safe_dump(self.config))

    def entry(self, ids, name: str = "masks-0a1b-000000.parquet") -> str:
        path = self.output / "_checkpoint" / name
        path.parent.mkdir(exist_ok=True)
        pq.write_table(pa.table({"id": pa.array(ids, pa.string())}), str(path))
        (self.output / name.replace(".parquet", "-0.parquet")).write_bytes(b"results")
        return str(path)

    def validate(self, capsys, *args):
        status = main(["validate", "--config", str(self.path), *args])
        captured = capsys.readouterr()
        return status, captured.out + captured.err


@pytest.fixture
def earlier(tmp_path, vit_pair):
    return EarlierRun(tmp_path, vit_pair.pth)


def test_unchanged_input_resumes(earlier, capsys):
    status, printed = earlier.validate(capsys)
    assert status == 0, printed
    assert plan_job(load_config(str(earlier.path))).resume.rows_done == 2


def test_an_input_file_changed_in_place_is_refused(earlier, capsys):
    moved = [dict(row, boxes=[[1.0, 1.0, 30.0, 30.0]]) for row in earlier.rows[:2]]  # the written rows' boxes moved
    write_rows(str(earlier.input / "part-0.parquet"), moved)
    status, printed = earlier.validate(capsys)
    assert status == 2
    assert "the input or weights changed since the run that wrote" in printed
    assert f"1 input file changed ({earlier.input / 'part-0.parquet'})" in printed
    assert "output.mode: overwrite" in printed


def test_added_and_gone_input_files_are_refused(earlier, capsys):
    write_rows(str(earlier.input / "part-2.parquet"), [dict(earlier.rows[0], id="new0")])
    os.remove(earlier.input / "part-1.parquet")
    status, printed = earlier.validate(capsys)
    assert status == 2
    assert f"1 input file added ({earlier.input / 'part-2.parquet'})" in printed
    assert f"1 input file gone ({earlier.input / 'part-1.parquet'})" in printed


def test_weights_replaced_at_the_same_path_are_refused(earlier, vit_pair, capsys):
    os.remove(earlier.checkpoint)
    shutil.copy(vit_pair.pth, earlier.checkpoint)  # a new file in its place
    status, printed = earlier.validate(capsys)
    assert status == 2 and "the weights at model.checkpoint replaced" in printed


def test_a_retry_pass_over_changed_input_is_refused(earlier, capsys):
    plan = earlier.plan
    plan.output.write_manifest(Manifest(config_digest(plan.config), 4, 4, []))
    write_rows(str(earlier.input / "part-1.parquet"), earlier.rows[2:3])
    status, printed = earlier.validate(capsys, "--retry-errors")
    assert status == 2 and "--retry-errors: the input or weights changed" in printed and "1 input file changed" in printed


def test_an_unreadable_checkpoint_entry_is_named_with_what_to_do(earlier, capsys):
    entry = earlier.output / "_checkpoint" / "masks-9f9f-000003.parquet"
    entry.write_bytes(b"PAR1 truncated")
    status, printed = earlier.validate(capsys)
    assert status == 2
    assert f"1 checkpoint entries cannot be read, e.g. {entry}" in printed
    assert f"{earlier.output}/masks-9f9f-000003*.parquet" in printed and "Traceback" not in printed


def test_checkpoint_entries_listing_ids_not_in_the_input_are_refused(earlier, capsys):
    earlier.entry(["good2", "forged-1", "forged-2"], "masks-0c0c-000001.parquet")
    status, printed = earlier.validate(capsys)
    assert status == 2 and "lists 2 ids that the input does not hold" in printed


def write_job_yaml(tmp_path, checkpoint) -> None:
    """tmp_path/job.yaml: a job over tmp_path/input into tmp_path/output."""
    config = {"input": {"path": str(tmp_path / "input"), "id_column": "id", "image_column": "image",
                        "boxes_column": "boxes"},
              "output": {"path": str(tmp_path / "output")}, "model": {"checkpoint": checkpoint}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))


def test_duplicate_ids_are_refused_before_work_in_every_mode(tmp_path, vit_pair, capsys):
    (tmp_path / "input").mkdir()
    rows = sample_rows(num_good=3)[:3]
    write_rows(str(tmp_path / "input" / "a.parquet"), rows)
    write_rows(str(tmp_path / "input" / "b.parquet"), [dict(rows[1])])  # good1 again, in another file
    write_job_yaml(tmp_path, vit_pair.pth)
    assert main(["validate", "--config", str(tmp_path / "job.yaml")]) == 2
    assert "1 ids appear more than once (e.g. 'good1')" in capsys.readouterr().err


def test_null_ids_are_row_errors_but_refused_by_a_resumed_run(tmp_path, vit_pair, capsys):
    (tmp_path / "input").mkdir()
    rows = sample_rows(num_good=2)[:2]
    write_rows(str(tmp_path / "input" / "a.parquet"), [rows[0], {**rows[1], "id": None}])
    write_job_yaml(tmp_path, vit_pair.pth)
    assert main(["validate", "--config", str(tmp_path / "job.yaml")]) == 0
    assert "1 rows have a null 'id': each comes out as a row error" in capsys.readouterr().err
    assert main(["validate", "--config", str(tmp_path / "job.yaml"), "--set", "output.mode=resume"]) == 2
    assert "1 rows have a null 'id'; output.mode: resume skips the rows already written by id" in \
        capsys.readouterr().err
