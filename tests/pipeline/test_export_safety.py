"""Exports that never reach outside what the job read: YOLO-seg links only the image-URI column's
images under the job's allowed prefixes (never an id), lists the rest as escaped JSON lines,
builds where no one can plant a link, and names every image so that Ultralytics pairs it with
its labels; Label Studio's labeling config is well-formed XML for any category it writes."""

import json
import os
import re
import xml.etree.ElementTree as ET

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.result_data import describe_job, rect_mask, result_row

from pipeline.cli import main
from pipeline.exports.image_refs import ImageSources, NoImageToPointAt
from pipeline.exports.label_studio import write_label_studio
from pipeline.exports.yolo import write_yolo_seg
from pipeline.output import JobOutput
from pipeline.output.results import ResultColumns, ResultReader
from pipeline.schema import RESULT_FIELDS
from pipeline.storage import Location

H, W = 20, 30


def ultralytics_label_path(image_path):
    """Where Ultralytics looks for an image's labels: a copy of the rule of `img2label_paths`
    (ultralytics/data/utils.py), the test's oracle."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return sb.join(image_path.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt"


def job_results(directory, ids, uris=None, categories=None):
    """Results of one mask per row; its integer category is the row's index unless given."""
    rows = []
    for k, row_id in enumerate(ids):
        row = result_row(row_id, (H, W), [rect_mask(H, W, 2, 12, 3, 20)], [0.9],
                         categories=[categories[k] if categories else k])
        if uris is not None:
            row["path"] = uris[k]
        rows.append(row)
    category_type = pa.list_(pa.string()) if categories else pa.list_(pa.int64())
    fields = [pa.field("id", pa.string()), pa.field("cat", category_type)]
    fields += [pa.field("path", pa.string())] if uris is not None else []
    os.makedirs(directory)
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields + RESULT_FIELDS)),
                   os.path.join(directory, "masks-0-000000-0.parquet"))
    return ResultReader(JobOutput(str(directory)), ResultColumns("id", "cat", "path" if uris is not None else None))


def label_class(path):
    lines = open(path).read().splitlines()
    assert len(lines) == 1, path
    return int(lines[0].split()[0])


def json_lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def safe_entry(path):
    folder, _, name = path.partition("/")
    return folder == "images" and name and "/" not in name and "\\" not in name and not name.startswith(".") \
        and all(ch >= " " and ch != "\x7f" for ch in name)


def no_links_under(directory):
    return [os.path.join(d, n) for d, dirs, files in os.walk(directory) for n in dirs + files
            if os.path.islink(os.path.join(d, n))]


ODD_IDS = ["/etc/passwd", "../../../../etc/hostname", "a/b.png", "..", ".", "...", ".hidden", "tab\tid",
           "new\nline", "back\\slash", "nul\x00id", "🙂", "/etc/passwd/"]


def test_yolo_ids_are_never_read_as_paths(tmp_path):
    """Rows whose image URI is null are named by their ids, which are listed, never linked,
    even where an id names a file under the allowed prefixes; the one row with a URI is linked."""
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "real.png").write_bytes(b"an image")
    (pictures / "a").mkdir()
    (pictures / "a" / "b.png").write_bytes(b"an image")  # what the id "a/b.png" would name
    ids = [*ODD_IDS, "real"]
    out = tmp_path / "yolo"
    counts = write_yolo_seg(job_results(tmp_path / "results", ids, [None] * len(ODD_IDS) + [str(pictures / "real.png")]),
                            str(out), images=ImageSources([str(pictures)], str(pictures)))
    assert (counts["linked"], counts["no_image_uri"]) == (1, len(ODD_IDS))
    assert os.listdir(out / "images") == ["real.png"] and no_links_under(tmp_path / "results") == []
    assert not (out / "images_to_fetch.jsonl").exists()
    listed = json_lines(out / "images_in_input.jsonl")
    assert [entry["id"] for entry in listed] == ODD_IDS
    assert len(os.listdir(out / "labels")) == len(ids)
    for k, entry in enumerate(listed):
        assert safe_entry(entry["path"]), entry
        # The bytes written to the path plus their format's extension pair with the row's labels.
        assert label_class(ultralytics_label_path(f"{out}/{entry['path']}.png")) == k
    assert sorted(os.listdir(tmp_path)) == ["pictures", "results", "yolo"]


def test_an_export_with_no_image_to_point_at_is_refused_and_writes_nothing(tmp_path):
    with pytest.raises(NoImageToPointAt, match=r"none of the 3 images can be linked or listed to fetch \(named by "
                                               r"id: 3, outside the job's allowed URI prefixes: 0\)"):
        write_yolo_seg(job_results(tmp_path / "results", ["/etc/passwd", "a", "b"]), str(tmp_path / "yolo"))
    with pytest.raises(NoImageToPointAt, match="names all 2 images by id alone"):
        write_label_studio(job_results(tmp_path / "results2", ["a", "b"], [None, None]),
                           Location(str(tmp_path / "ls" / "tasks.json")))
    assert sorted(os.listdir(tmp_path)) == ["results", "results2"]


ODD_NAMES = ["..png", ".png", "...", ".hidden.png", "a.b.png", "noext", "tab\tname.png", "new\nline.png",
             "back\\slash.png", "🙂.png", "images.png", "trailing.", "q?.png", "a" * 240 + ".png", "x.png"]


def test_yolo_odd_image_names_pair_with_their_labels(tmp_path):
    pictures = tmp_path / "pictures"
    (pictures / "again").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    uris = []
    for name in [*ODD_NAMES, "again/x.png", "../elsewhere/secret.png"]:
        (pictures / name).write_bytes(b"an image")
        uris.append(str(pictures / name))
    remote = ["s3://bucket/..png", "s3://bucket/x.png?versionId=1", "s3://bucket/dir/", "s3://bucket/...png",
              "s3://other/y.png"]
    uris += remote
    out = tmp_path / "yolo"
    counts = write_yolo_seg(job_results(tmp_path / "results", [f"r{k}" for k in range(len(uris))], uris), str(out),
                            images=ImageSources([str(pictures), "s3://bucket/"]))
    assert (counts["linked"], counts["to_fetch"], counts["outside_prefixes"]) == (len(ODD_NAMES) + 1, 4, 2)
    assert len(os.listdir(out / "labels")) == len(uris)  # every image has its label file, linked or not
    row_of = {uri: k for k, uri in enumerate(uris)}
    for name in os.listdir(out / "images"):
        image = os.path.join(out, "images", name)
        assert safe_entry(f"images/{name}"), name
        assert label_class(ultralytics_label_path(image)) == row_of[os.readlink(image)]
    listed = json_lines(out / "images_to_fetch.jsonl")
    assert [entry["uri"] for entry in listed] == remote[:4]
    for entry in listed:
        assert safe_entry(entry["path"]), entry
        assert label_class(ultralytics_label_path(f"{out}/{entry['path']}")) == row_of[entry["uri"]]
    assert no_links_under(out / "labels") == []


def test_yolo_fetch_list_escapes_tabs_and_newlines(tmp_path):
    # Each would add a download destination of its own to a tab-separated list.
    uris = ["s3://bucket/x.png\t/home/victim/.bashrc", "s3://bucket/y.png\ns3://bucket/z.png\t/etc/cron.d/evil",
            "s3://bucket/\r\n.png"]
    out = tmp_path / "yolo"
    counts = write_yolo_seg(job_results(tmp_path / "results", ["a", "b", "c"], uris), str(out),
                            images=ImageSources(["s3://bucket/"]))
    assert counts["to_fetch"] == 3
    assert len((out / "images_to_fetch.jsonl").read_text().splitlines()) == 3
    listed = json_lines(out / "images_to_fetch.jsonl")
    assert [entry["uri"] for entry in listed] == uris
    assert all(safe_entry(entry["path"]) for entry in listed), listed


def test_yolo_builds_where_no_link_can_be_planted(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    planted = tmp_path / f"yolo.partial-{os.getpid()}"  # where the export once built, predictably
    planted.symlink_to(victim)
    out = tmp_path / "yolo"
    write_yolo_seg(job_results(tmp_path / "results", ["a"], ["s3://bucket/a.png"]), str(out),
                   images=ImageSources(["s3://bucket/"]))
    assert os.listdir(victim) == [] and os.readlink(planted) == str(victim)
    assert not out.is_symlink() and (out / "labels" / "a.txt").is_file()

    linked_out = tmp_path / "linked"  # the output itself a link to someone's empty directory
    linked_out.symlink_to(victim)
    with pytest.raises(ValueError, match="is a symbolic link"):
        write_yolo_seg(job_results(tmp_path / "results2", ["a"], ["s3://bucket/a.png"]), str(linked_out),
                       images=ImageSources(["s3://bucket/"]))
    assert os.listdir(victim) == []
    assert sorted(p for p in os.listdir(tmp_path) if "partial" in p) == [planted.name]  # no build left behind


def test_cli_links_only_under_the_jobs_prefixes(tmp_path, capsys):
    pictures = tmp_path / "pictures"
    for name in ("kept/x.png", "other/y.png"):
        (pictures / name).parent.mkdir(parents=True, exist_ok=True)
        (pictures / name).write_bytes(b"an image")
    results = tmp_path / "results"
    # A relative path is read against the job's input directory, as the job read it.
    uris = ["../pictures/kept/x.png", str(pictures / "other/y.png"), "s3://bucket/z.png", "/etc/hostname"]
    job_results(results, ["a", "b", "c", "d"], uris)
    describe_job(str(results), 4, {"path": str(tmp_path / "input" / "rows.parquet"), "id_column": "id",
                                   "category_column": "cat", "image_uri_column": "path",
                                   "allowed_uri_prefixes": [str(pictures / "kept"), "s3://bucket/"]})
    assert main(["export", "--format", "yolo-seg", "--input", str(results), "--output", str(tmp_path / "yolo")]) == 0
    assert "linked: 1, to_fetch: 1, no_image_uri: 0, outside_prefixes: 2" in capsys.readouterr().out
    assert os.listdir(tmp_path / "yolo" / "images") == ["x.png"]
    assert os.readlink(tmp_path / "yolo" / "images" / "x.png") == str(pictures / "kept" / "x.png")


HOSTILE = ['say "hi"', "it's", "a<b>&c", "]]>", "line\nbreak", "tab\there", "🙂 emoji", "--><!--"]


def test_label_studio_config_is_well_formed_xml_for_any_category(tmp_path):
    tasks = tmp_path / "ls" / "tasks.json"
    write_label_studio(job_results(tmp_path / "results", [f"r{k}" for k in range(len(HOSTILE))],
                                   [f"s3://bucket/{k}.png" for k in range(len(HOSTILE))], categories=HOSTILE),
                       Location(str(tasks)))
    root = ET.parse(tmp_path / "ls" / "tasks.labeling_config.xml").getroot()
    assert [label.get("value") for label in root.iter("Label")] == HOSTILE
    assert [t["predictions"][0]["result"][0]["value"]["brushlabels"] for t in json.load(open(tasks))] == \
        [[name] for name in HOSTILE]


@pytest.mark.parametrize("bad", ["nul\x00", "vt\x0b", "esc\x1b", "\ufffe"])
def test_label_studio_refuses_a_category_xml_cannot_hold(tmp_path, bad):
    """XML 1.0 has no form, escaped or not, for these characters: refused by name, nothing written."""
    tasks = tmp_path / "ls" / "tasks.json"
    with pytest.raises(ValueError, match=f"category {re.escape(repr(bad))} holds"):
        write_label_studio(job_results(tmp_path / "results", ["a", "b"], ["s3://b/a.png", "s3://b/b.png"],
                                       categories=["fine", bad]), Location(str(tasks)))
    assert not (tmp_path / "ls").exists()
