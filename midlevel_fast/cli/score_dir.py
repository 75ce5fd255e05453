"""The ``score-dir`` command: a directory into JSON Lines or Parquet, resumable, sharded under ``torchrun``
(:func:`midlevel_fast.scaleout.collection.score_collection`)."""
from __future__ import annotations

import argparse
import logging

from midlevel_fast.cli.common import EXIT_FAILED, EXIT_OK, load_cli_model
from midlevel_fast.cli.distributed import add_distributed_options, distributed
from midlevel_fast.cli.score import add_scoring_options, checked_options, positive_int
from midlevel_fast.scaleout.collection import score_collection
from midlevel_fast.scaleout.results import output_paths, read_rows

log = logging.getLogger(__name__)


def cmd_score_dir(args: argparse.Namespace) -> int:
    """``score-dir``: exit status EXIT_OK when every image of the output was scored, EXIT_FAILED when some could
    not be (unreadable or refused: listed with the reason in the errors file, not fatal)."""
    options = checked_options(args)
    model = load_cli_model(args.head, args.backbone, args.weights)
    res = score_collection(args.dir, args.out, model, mode=options.mode, k=options.k, top=args.top,
                           full_scores=args.full_scores, maps_dir=args.maps, batch_size=options.batch_size,
                           window_step=options.window_step, precision=options.precision,
                           detection_threshold=options.detection_threshold,
                           num_workers=args.workers, progress=False if args.no_progress else None,
                           batch_images=args.batch_images)
    log.info(f"scored {res.scored} images ({res.images_per_second:.2f} images/s), {res.resumed} already done, "
             f"{res.failed} failed")
    if res.rows is None:
        return EXIT_OK
    if not res.errors:
        log.info(f"{res.rows} rows in {res.out}")
        return EXIT_OK
    errors_path = output_paths(res.out)[1]
    reasons = [str(r.get("error", "")) for r in read_rows(errors_path)]
    # "unreadable: ..." (decoding failed) or "refused: ..." (scoring refused it): see score_collection.
    counts = {kind: sum(r.startswith(kind + ":") for r in reasons) for kind in ("unreadable", "refused")}
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    listed = f"{kinds}; " if kinds else ""
    log.warning(f"{res.rows} rows in {res.out}; {res.errors} image{'s' if res.errors != 1 else ''} could not be "
                f"scored ({listed}listed with the reasons in {errors_path})")
    return EXIT_FAILED


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``score-dir`` to ``subparsers``."""
    d = subparsers.add_parser("score-dir", help="score every image of a directory into JSON Lines or Parquet "
                                                "(resumable; shards across ranks under torchrun)")
    d.add_argument("dir", help="directory searched recursively for images")
    d.add_argument("--out", required=True, help="output file, .jsonl or .parquet (Parquet needs pyarrow)")
    add_scoring_options(d, "classes per row, best by score, with their presence and points (--maps: the present "
                           "ones among them)", "torch CPU threads per rank", 5)
    d.add_argument("--full-scores", action="store_true", help="also store the score of every class")
    d.add_argument("--workers", type=int, default=2, help="decoding processes per rank (0: decode in-process)")
    d.add_argument("--batch-images", type=positive_int, default=None, metavar="N",
                   help="images scored together, their same-size dense planes in one trunk call (default: 8 in "
                        "dense mode on a GPU, 1 elsewhere: on the CPU batching across images was measured slower)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar (-q: none either)")
    add_distributed_options(d)
    d.set_defaults(func=distributed(cmd_score_dir))
