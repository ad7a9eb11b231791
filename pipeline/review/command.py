"""`review`: its arguments, and the page it writes."""

import argparse

from ..output.arguments import add_output_arguments, named_output


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    rev = sub.add_parser("review", help="a static HTML page of a job's masks over its images, lowest scores first")
    add_output_arguments(rev)
    rev.add_argument("--out", required=True,
                     help="local directory for index.html and its pictures: new, empty, or an earlier page's, of "
                          "which only the page's own files (listed in its .samhq-review.json) are replaced")
    rev.add_argument("--images", default=None, help="the job's input Parquet (default: the job's input.path)")
    rev.add_argument("--image-column", default=None,
                     help="its column of encoded images or image URIs (default: the job's)")
    rev.add_argument("--max-images", type=int, default=200, help="images on the page, at most (default: 200)")
    rev.add_argument("--needs-review", type=int, default=None,
                     help="of them, the images with the lowest predicted IoU or stability (default: a quarter)")
    rev.add_argument("--seed", type=int, default=0, help="of the sample of the other images (default: 0)")
    rev.add_argument("--thumbnail-side", type=int, default=512,
                     help="thumbnails' longest side in pixels, also the enlarged view's (default: 512)")
    rev.set_defaults(fn=cmd_review)


def cmd_review(args: argparse.Namespace) -> int:
    from .page import write_review

    named = named_output(args)
    summary = write_review(named.output, args.out, images=args.images, config=named.config, id_column=args.id_column,
                           category_column=args.category_column, image_column=args.image_column,
                           max_images=args.max_images,
                           needs_review=args.max_images // 4 if args.needs_review is None else args.needs_review,
                           seed=args.seed, side=args.thumbnail_side)
    totals = summary.totals
    unreadable = f", {summary.unreadable} of them unreadable (shown with their error)" if summary.unreadable else ""
    print(f"wrote {summary.page}: {summary.shown} of {totals['images']} images{unreadable}; {totals['num_masks']} masks, "
          f"{totals['rows']} rows, {sum(totals['failed_rows'].values())} failed")
    return 0
