"""The labelling loop, measured end to end with the project's own commands, as the README runs
it: annotate a first batch of demo scenes, export the masks to Label Studio tasks, correct them
(the demo's exact masks stand in for a reviewer: `demo-correct`), import the corrections,
fine-tune on them with Ray Train workers, and annotate a second batch of new scenes (held out:
another seed, never trained on) with the model before and after, evaluated against its exact
masks. Writes bench/results/labelling_loop.md.

    python -m bench.labelling_loop --workdir /tmp/loop --scenes 100 --holdout 100 --steps 200

Each step is the real command line in a subprocess; its wall time is in the report. The
fine-tuning report's own before/after (on its id-hash validation split of the corrected batch)
is quoted beside the held-out batch's."""

import argparse
import os
import re
import subprocess
import sys
import time
from typing import Dict, List, Tuple

from bench.common.machine import machine_at_end
from pipeline.demo.dataset import DEMO_CHECKPOINT, write_sample_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLDOUT_SEED = 7  # not the demo's batch (2024), nor the demo model's training seeds (0, 1)
RESULTS = os.path.join(ROOT, "bench", "results", "labelling_loop.md")


def command(args: List[str], timings: List[Tuple[str, float]], what: str) -> str:
    """Run `python -m pipeline ARGS`; its output, and its wall time added to `timings`."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True)
    timings.append((what, time.perf_counter() - start))
    if done.returncode != 0:
        raise SystemExit(f"{what} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done.stdout


def quality(report_path: str) -> Dict[str, str]:
    """The metrics table of an `evaluate --report`."""
    text = open(report_path).read()
    return dict(re.findall(r"^\| (mIoU|mBIoU|AP|AP50|AP75|boxes evaluated) \| ([0-9.]+) \|$", text, re.M))


def annotate(workdir: str, name: str, input_path: str, checkpoint: str, truth: str,
             timings: List[Tuple[str, float]]) -> Dict[str, str]:
    """Run the job over `input_path` with `checkpoint`, evaluate against `truth`."""
    output = os.path.join(workdir, name)
    command(["run", "--config", "configs/local_example.yaml", "--set", f"input.path={input_path}",
             "--set", f"output.path={output}", "--set", f"model.checkpoint={checkpoint}",
             "--set", "output.mode=overwrite", "--set", f"compute.torch_threads={os.cpu_count()}"],
            timings, f"annotate {name}")
    report = os.path.join(workdir, f"{name}_quality.md")
    command(["evaluate", "--predictions", output, "--ground-truth", truth, "--id-column", "image_id",
             "--category-column", "labels", "--report", report], timings, f"evaluate {name}")
    return quality(report)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--scenes", type=int, default=100, help="scenes annotated, corrected and trained on")
    p.add_argument("--holdout", type=int, default=100, help="new scenes annotated before and after")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--trainable", choices=("hq", "decoder"), default="hq")
    p.add_argument("--out", default=RESULTS)
    args = p.parse_args()
    workdir = os.path.abspath(args.workdir)
    first = os.path.join(workdir, "first")
    timings: List[Tuple[str, float]] = []
    command(["demo", "--workdir", first, "--num-images", str(args.scenes)], timings, "annotate the first batch (demo)")
    tasks, reviewed = os.path.join(first, "ls", "tasks.json"), os.path.join(first, "ls", "reviewed.json")
    command(["export", "--format", "label-studio", "--input", os.path.join(first, "output"), "--output", tasks,
             "--label-studio-root", first], timings, "export to Label Studio")
    corrected = command(["demo-correct", "--tasks", tasks, "--ground-truth",
                         os.path.join(first, "ground_truth", "masks.parquet"), "--output", reviewed],
                        timings, "correct (stand-in reviewer)").splitlines()[0]
    labelled = os.path.join(first, "corrected.parquet")
    imported = command(["import", "--format", "label-studio", "--input", reviewed, "--output", labelled,
                        "--label-studio-root", first], timings, "import the corrections")
    finetuned = os.path.join(workdir, "finetuned")
    command(["finetune", "--config", "configs/finetune_corrections.yaml", "--relative-to", ROOT,
             "--set", f"data.train={labelled}", "--set", f"model.output={finetuned}",
             "--set", f"training.steps={args.steps}", "--set", f"training.workers={args.workers}",
             "--set", f"training.lr={args.lr}", "--set", f"training.trainable={args.trainable}",
             "--set", f"training.log_every={max(1, args.steps // 4)}", "--set", f"training.warmup_steps={args.steps // 10}",
             "--replace-output"], timings, f"fine-tune ({args.workers} Ray Train workers)")
    holdout = os.path.join(workdir, "holdout")
    holdout_input, holdout_truth = os.path.join(holdout, "input.parquet"), os.path.join(holdout, "truth.parquet")
    write_sample_dataset(holdout_input, args.holdout, seed=HOLDOUT_SEED, ground_truth_path=holdout_truth,
                         images_dir=os.path.join(holdout, "images"))
    before = annotate(holdout, "before", holdout_input, DEMO_CHECKPOINT, holdout_truth, timings)
    after = annotate(holdout, "after", holdout_input, finetuned, holdout_truth, timings)
    finetune_report = open(os.path.join(finetuned, "finetune_report.md")).read()
    lines = ["# The labelling loop on the demo's scenes", "",
             f"`python -m bench.labelling_loop --workdir DIR --scenes {args.scenes} --holdout {args.holdout} "
             f"--steps {args.steps} --workers {args.workers} --lr {args.lr} --trainable {args.trainable}`", "",
             f"Machine: {machine_at_end()}.", "",
             f"Annotated {args.scenes} demo scenes (seed 2024) with the demo model, exported them to Label Studio "
             "tasks, corrected them with `demo-correct` (the demo's exact masks stand in for a reviewer: every "
             "predicted region redrawn exactly, under its own region id), imported the corrections and fine-tuned "
             f"{'the HQ parameters' if args.trainable == 'hq' else 'the mask decoder'} on them for {args.steps} steps "
             f"(lr {args.lr}) with {args.workers} Ray Train workers (DDP, gloo). "
             f"Then annotated {args.holdout} new scenes (seed {HOLDOUT_SEED}, never trained on) with the demo model "
             "and with the fine-tuned one, and evaluated both against the scenes' exact masks.", "",
             f"Stand-in review: {corrected}", "", "Import:", "", "```text", imported.strip(), "```", "",
             "## Held-out scenes, before and after", "",
             "| metric | demo model | fine-tuned | change |", "|---|---:|---:|---:|"]
    for metric in ("mIoU", "mBIoU", "AP", "AP50", "AP75"):
        lines.append(f"| {metric} | {before[metric]} | {after[metric]} | {float(after[metric]) - float(before[metric]):+.4f} |")
    lines += [f"| boxes evaluated | {before['boxes evaluated']} | {after['boxes evaluated']} | |", "",
              "## The fine-tuning run's own report (validation split of the corrected batch)", "",
              finetune_report.replace("# HQ fine-tuning\n", "").strip(), "", "## Wall time per step", "",
              "| step | seconds |", "|---|---:|", *(f"| {what} | {seconds:.1f} |" for what, seconds in timings)]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
