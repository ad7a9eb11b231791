"""bench/scale.py's report: its records (one per run, from its JSON lines) as Markdown tables,
and the 10M / 100M extrapolation from the largest local runs."""

from typing import List, Tuple

ROWS_PER_BLOCK = 1000  # the job's default most rows per block: one result file and checkpoint entry each
# How the job cut its blocks (a record's machine["blocks"]; the records before it was kept cut
# by size): "size", every stage to a target of half a block's input bytes, so that the decode
# and model stages cut each block into many; "rows", by rows in a stage after the read, kept
# whole after; "read", a block per read task (by rows after the read only for a file of more
# rows than a block, which these inputs have not), kept whole after; "read_check_off_driver",
# as "read", with the closing check in a Ray task on a worker node instead of on the driver;
# "read_check_off_driver_id_keys", as that, with the plan keeping 8-byte keys of the input's
# ids instead of the ids.
BLOCKS = {"size": "blocks cut by size", "rows": "blocks cut by rows after the read", "read": "a block per read task",
          "read_check_off_driver": "a block per read task, closing check off the driver",
          "read_check_off_driver_id_keys": "a block per read task, closing check off the driver, input id keys"}


def blocks(record: dict) -> str:
    return str(record["machine"].get("blocks", "size"))


def _k(rows: int) -> str:
    return f"{rows / 1e6:g}M" if rows >= 1_000_000 else f"{rows // 1000}k"


def _cluster(machine: dict) -> str:
    if machine["workers"] == 0:
        return "one node of 2 CPUs (head and worker)"
    return f"a head of 0 CPUs (the driver's node) and {machine['workers']} worker nodes of 1 CPU each"


def _runs_table(records: List[dict]) -> List[str]:
    lines = ["| rows | storage | version | cluster | input files | wall s | rows/s | to first result file s "
             "| driver peak RSS MiB | driver RSS at ¼, ½, ¾ of the run MiB | driver CPU s | result files | output MiB "
             "| load before / mean / max | started |", "|" + "---|" * 15]
    for r in records:
        m = r["machine"]
        quarters = ", ".join(f"{v:.0f}" for v in r["driver_rss_quarters_mib"])
        first = f"{r['first_file_s']:.1f}" if r["first_file_s"] is not None else "-"
        lines.append(f"| {r['rows']:,} | {r['storage']} | {BLOCKS[blocks(r)]} | {m['workers'] or 1} node(s) | "
                     f"{r['files_in']:,} | "
                     f"{r['seconds']:.1f} | {r['rows_per_s']:.1f} | {first} | {r['driver_peak_rss_mib']:.0f} | {quarters} | "
                     f"{r['driver_cpu_s']:.0f} | {r['files_out']:,} | {r['bytes_out'] / 2**20:.1f} | "
                     f"{m['load_before'].split()[0]} / {r['load_mean']:.2f} / {r['load_max']:.2f} | {m['date']} |")
    return lines


def _nodes_table(records: List[dict]) -> List[str]:
    names = sorted({n for r in records for n in r["node_cpu_s"]}, key=lambda n: (n != "head", n))
    lines = ["| run | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for r in records:
        total = sum(r["node_cpu_s"].values()) or 1.0
        cells = []
        for n in names:
            seconds = r["node_cpu_s"].get(n)
            mark = " (model actor)" if n in r["model_nodes"] else ""
            cells.append("-" if seconds is None else f"{seconds:.0f} s, {seconds / total:.0%}{mark}")
        label = f"{r['spec']}, {BLOCKS[blocks(r)]}" + (" (the resumed run)" if "killed" in r else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _growth_table(records: List[dict]) -> List[str]:
    lines = ["| storage | version | rows | driver peak RSS MiB | growth from the size before |", "|---|---|---|---|---|"]
    for storage, cut in sorted({(r["storage"], blocks(r)) for r in records}):
        runs = sorted((r for r in records if r["storage"] == storage and blocks(r) == cut), key=lambda r: r["rows"])
        for before, r in zip([None, *runs[:-1]], runs, strict=True):
            growth = "-" if before is None else (
                f"{r['driver_peak_rss_mib'] / before['driver_peak_rss_mib'] - 1:+.0%} over {_k(before['rows'])}")
            lines.append(f"| {storage} | {BLOCKS[cut]} | {r['rows']:,} | {r['driver_peak_rss_mib']:.0f} | {growth} |")
    return lines


def _kill_table(records: List[dict]) -> List[str]:
    lines = ["| rows | storage | version | killed after s | at the kill: decoded / through the model / encoded | result files "
             "(rows) at the kill | rows the resumed run skipped | rows redone | resumed run: wall s, rows/s of the rest, "
             "driver peak RSS MiB | resumed output |", "|" + "---|" * 10]
    for r in records:
        k, resumed = r["killed"], r["resumed"]
        rest_rate = (r["rows"] - resumed["rows_skipped"]) / r["seconds"]
        lines.append(f"| {r['rows']:,} | {r['storage']} | {BLOCKS[blocks(r)]} | {k['seconds']:.0f} | "
                     f"{k['decoded']:,} / {k['modelled']:,} / "
                     f"{k['encoded']:,} | {k['result_files']} ({k['rows_in_result_files']:,}) | "
                     f"{resumed['rows_skipped']:,} | {resumed['rows_redone']:,} | {r['seconds']:.0f}, {rest_rate:.0f}, "
                     f"{r['driver_peak_rss_mib']:.0f} | every id once ({r['rows']:,} ids in {r['files_out']} files) |")
    return lines


def extrapolate(runs: List[dict]) -> List[Tuple[str, str, str, str, str]]:
    """(quantity, at the largest run, 10M, 100M, how) from the two largest runs of one storage."""
    small, large = runs[-2], runs[-1]
    rss_per_row = max(0.0, (large["driver_peak_rss_mib"] - small["driver_peak_rss_mib"]) / (large["rows"] - small["rows"]))

    def at(rows: int) -> Tuple[float, float]:
        return rows / large["rows"], large["driver_peak_rss_mib"] + rss_per_row * (rows - large["rows"])

    rows_10m, rows_100m = 10_000_000, 100_000_000
    (s10, rss10), (s100, rss100) = at(rows_10m), at(rows_100m)
    return [
        ("wall time, this cluster", f"{large['seconds'] / 60:.1f} min", f"{large['seconds'] * s10 / 3600:.1f} h",
         f"{large['seconds'] * s100 / 3600:.0f} h", "linear in rows at the largest run's rate"),
        ("driver peak RSS", f"{large['driver_peak_rss_mib']:.0f} MiB", f"{rss10:.0f} MiB", f"{rss100:.0f} MiB",
         f"linear fit of the two largest runs ({rss_per_row * 1e6:.0f} MiB per million rows)"),
        ("result files (= checkpoint entries)", f"{large['files_out']:,}", f"{rows_10m // ROWS_PER_BLOCK:,}",
         f"{rows_100m // ROWS_PER_BLOCK:,}", "one per block of at most 1,000 rows"),
        ("output size", f"{large['bytes_out'] / 2**20:.0f} MiB", f"{large['bytes_out'] * s10 / 2**30:.1f} GiB",
         f"{large['bytes_out'] * s100 / 2**30:.0f} GiB",
         f"{large['bytes_out'] / large['rows']:.0f} bytes per row (one 64 px mask each; real masks are larger)"),
    ]


def render(records: List[dict]) -> str:
    runs = [r for r in records if "killed" not in r]
    kills = [r for r in records if "killed" in r]
    m = records[0]["machine"]
    lines = ["# The pipeline at scale on a local Ray cluster: small images, the smallest model", "",
             f"- machine: {m['cpu']}, {m['cores']} logical cores, {m['memory_gib']:.0f} GiB; torch {m['torch']}, "
             f"ray {m['ray']}; every node and server of the cluster runs on it",
             f"- cluster: {_cluster(m)}, each a `ray start` process of its own, 1 GiB object store per worker "
             "node; the CLI as the driver, on the head's machine",
             "- data: 64 x 64 PNG images (one box each), bytes in the Parquet rows, 100 rows per file",
             "- model: random-weight ViT SAM-HQ at 64 px (one 32-wide encoder block, 32-wide decoder): the smallest "
             "the code supports, so the data plane dominates",
             f"- job: 1 model actor (1 CPU, 1 torch thread, batches of {m['batch_size']}), decode tasks of 32 images, "
             f"compute.encode_cpus {m['encode_cpus']:g}; input.num_blocks unset (the default)",
             "- blocks cut by size: every stage cut its output blocks to half a block's input bytes (Ray Data's "
             "target block size, set to shape the read), so the decode and model stages cut each block into many; "
             "by rows after the read: in a stage of CPU tasks of its own, and kept whole by the later stages up to "
             "Ray Data's 128 MiB; per read task: a read task of about a block's bytes of files puts out one block, "
             "kept whole as before (the job cuts by rows only a file of more rows than a block); closing check off the "
             "driver: the job's closing check (every id of the output) in a Ray task on a worker node, not on the "
             "driver; input id keys: the plan keeps an 8-byte key of each input id, not the ids",
             "- each run's `started` and load average are in its row; the load counts every process of the cluster, "
             "so a load near the cluster's CPU count is the run itself", "",
             "## Runs", ""] + _runs_table(runs)
    lines += ["", "## Work per node (CPU seconds of each node's processes, share of the cluster's)", ""]
    lines += _nodes_table(records)
    if any(r.get("node_cpu_since_cluster_start") for r in records):
        lines += ["", "Records marked `node_cpu_since_cluster_start` counted each process's CPU since it started, not "
                  "since the run did: a node's long-lived processes (raylet, agents, reused workers) carry the runs "
                  "before it on the same cluster, so only the first run's row is its own. The model actor is a new "
                  "process in each job, so its node's figure holds the model's work plus that carry-over."]
    lines += ["", "## Driver peak RSS as rows grow", ""] + _growth_table(runs)
    if kills:
        lines += ["", "## Driver SIGKILLed at half the rows, then resumed", "",
                  "Rows redone: rows through the model at the last progress line before the kill (every 5 s) less the "
                  "rows the resumed run found written; the rows the model ran after that line are not counted.", ""]
        lines += _kill_table(kills)
    # From the newest way of cutting blocks with local runs of two sizes or more.
    for cut in dict.fromkeys(blocks(r) for r in reversed(records)):
        local = sorted((r for r in runs if r["storage"] == "local disk" and blocks(r) == cut), key=lambda r: r["rows"])
        if len({r["rows"] for r in local}) >= 2:
            break
    if len({r["rows"] for r in local}) >= 2:
        lines += ["", f"## Extrapolated from the local runs of {_k(local[-2]['rows'])} and {_k(local[-1]['rows'])} rows, "
                  f"{BLOCKS[cut]}",
                  "", "| quantity | at the largest run | 10M images | 100M images | how |", "|---|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in extrapolate(local)]
    lines += ["", "## Job summaries", ""] + [f"- {r['spec']}, {BLOCKS[blocks(r)]}: `{r['summary']}`"
                                             for r in records]
    return "\n".join(lines) + "\n"
