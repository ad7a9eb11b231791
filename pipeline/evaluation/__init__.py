"""Mask quality of the pipeline's results against ground-truth masks: mIoU, boundary IoU, COCO mask AP.

`evaluate.evaluate_masks` compares the result Parquet (see `pipeline.schema`) with a ground-truth
Parquet and returns an `EvaluationResult` (`report`; `render_markdown()` gives the report).
`python -m pipeline evaluate` is its command line (`command`); the per-box metrics are
`pipeline.masks.metrics`'s; `reference` is the bare samhq_core loop the pipeline's masks are
checked and timed against.

Ground truth: Parquet (file, directory searched recursively for ``*.parquet``, or glob; local or any
fsspec URL) with
- the id column (the run's ``input.id_column``; ids unique per side),
- ``masks``: ``list<struct<size: list<int32> [h, w], counts: string>>``, per box a COCO compressed RLE
  (as ``pycocotools.mask.encode`` writes it, counts as a string), aligned with the boxes the pipeline
  was given for that row: same order, same count. A null mask means "not annotated": that box is not
  evaluated (counted in ``skipped_boxes["null_ground_truth"]``); a null list, that none of the row's
  boxes is annotated;
- optionally the category column (``category_column``): per row a list aligned with the boxes of
  category names (strings) or integer ids. It is read from the ground truth when the ground truth has
  it, else from the predictions (the pipeline passes the input's category column through).

Which boxes are evaluated: box ``i`` of a row whose id is in both inputs, when the prediction row's
``error`` is null, its ``box_errors[i]`` is null, the ground-truth mask ``i`` is not null, its score is
finite and (with a category column) its category is not null. Every other box is counted in
``skipped_boxes`` by reason; rows present on one side only are counted (``predictions_without_ground_truth``,
``ground_truth_without_predictions``, with a few example ids) and not evaluated. Misaligned rows (another
number of masks than the ground truth has) and masks whose size differs from the ground truth's raise
`ValueError`: the ground truth does not belong to this run. A run with ``model.multimask_keep: all``
has several masks per box (``prompt_index`` says whose): each box's first, the candidate of highest
predicted IoU, is evaluated, as ``multimask_keep: best`` would have kept it.

Segment-everything (outputs with ``found_by``): masks whose ``found_by`` is ``everything`` answer no
prompt, so the rules above apply to the other masks (the prompts') alone, and segment-everything's are
evaluated as detections, image by image: all of a row's segment-everything masks against all of its
ground-truth masks. A row with no prompts (``num_boxes`` 0: ``box_errors`` empty) has no prompt to align
with: its ground-truth ``masks`` list is simply the image's objects, in any order and number (no
alignment check), evaluated by segment-everything only. A row with prompts keeps its ground truth aligned
with its prompts, and those masks are also the objects its segment-everything masks are matched against.
Which rows take part: each row with segment-everything masks; each row without prompts, once the
predictions have any segment-everything mask or the job's description (``_samhq_job.json`` beside the
results) says ``everything.rows`` is ``without_prompts`` or ``all`` (its objects are then misses); a row
with prompts but no such mask only under ``everything.rows: all`` (without the description, one where
segment-everything found nothing cannot be told from one it did not run on, and is left out). A null
ground-truth list leaves the row out (not annotated), a null entry that object; a mask with a score not
finite is left out; masks of one row must share one size. When segment-everything did not run at all, a
row without prompts whose ground truth has masks is misaligned (``ValueError``), as before. Outputs
written before ``found_by`` are evaluated as above, every mask a prompt's.

Metrics, per evaluated box (prediction mask ``i`` against ground-truth mask ``i`` of the same id):
- IoU = |G ∩ P| / |G ∪ P| of the binary masks (1.0 when both are empty); mIoU is the mean.
- Boundary IoU (Cheng et al. 2021, "Boundary IoU: Improving Object-Centric Image Segmentation
  Evaluation"), as the reference code and the SAM-HQ evaluation compute it, with dilation ratio 0.02:
  ``d = max(1, round(0.02 * sqrt(h² + w²)))`` of the image, ``B(M) = M - erode(M)`` with ``erode`` the
  erosion by a 3x3 square applied ``d`` times, pixels outside the image counting as background, and
  BIoU = |B(G) ∩ B(P)| / |B(G) ∪ B(P)| (1.0 when both boundaries are empty, which happens exactly when
  both masks are empty). The erosion is computed exactly, without OpenCV: eroding ``d`` times by a 3x3
  square is eroding once by a (2d+1)x(2d+1) square, i.e. ``1 - max_pool(pad(1 - M, d, value=1))``; it is
  evaluated with an integer summed-area table (a pixel survives when its zero-padded window is all
  ones), on the crop of the union's bounding box (exact: outside it both masks are background, as
  outside the image). mBIoU is the mean.
- COCO mask AP (``pycocotools`` COCOeval, iouType ``segm``): the ground truth masks of the evaluated
  boxes are the annotations (iscrowd 0, area and bbox from pycocotools, category from the category
  column or 1), the predicted masks the detections, scored by ``iou_scores``. AP, AP50 and AP75 are
  COCOeval's ``stats[0..2]`` (area "all"), except that the detections per image are not capped at 100
  (``params.maxDets[-1]`` is raised to the largest box count of an image): with at most 100 boxes per
  image the numbers are exactly ``stats[0..2]``. Boxes not evaluated are in neither set (rather than
  counting as misses). COCOeval holds all annotations and detections of the evaluation in memory (as
  compressed RLE, the size of the ``masks`` columns), so this part of the memory grows with the data.
- Segment-everything AP (a section of its own, when the predictions have segment-everything masks or
  its description says it ran): class-agnostic COCOeval (segm, area all; every ground-truth mask category 1,
  iscrowd 0), the segment-everything masks the detections scored by ``iou_scores`` (the predicted IoU),
  ``maxDets = [1, 10, 100, max(1000, most masks of an image)]``. Reported: AP (IoU .50:.95), AP50 and AP75
  at the last maxDets (1000 for up to 1000 masks per image, so that none is cut), and AR at the same
  maxDets. When only rows without prompts were evaluated, the per-prompt metrics are left out of the
  report (the fields stay NaN).
- Per category (with a category column): box count, mIoU, mBIoU and AP (from the same COCOeval's
  per-category precision, equal to a COCOeval restricted to that category).
- The ``worst`` boxes by IoU (ties by BIoU, then id and box index); with ``overlays_dir`` and ``images``,
  one PNG per worst box: the image with the ground truth only in green, the prediction only in red and
  their overlap in yellow, alpha-blended.

Streaming: neither input is loaded whole. The two inputs are joined by id with a grace hash join: one
pass over each, record batch by record batch over only the needed columns, spooling every row into one
of ``num_partitions`` local temporary files (pickle) by a stable hash of its id; then partition by
partition the ground truth's rows are held in a dict and the predictions' rows streamed against it.
Memory is bounded by one ground-truth partition (compressed RLE), plus the COCOeval data above
(segment-everything's masks and objects included, hundreds per image); the temporary files need about
the size of both inputs' mask columns. Masks are decoded one box at a time.
Results do not depend on the partitioning, batch size or file order: means are exactly rounded sums,
and COCO image ids follow the sorted row ids.
"""
