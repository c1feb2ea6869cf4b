"""``train.precise_bn``: the final model's BatchNorm statistics from the training images at inference geometry.

Why (docs/choices.md): the running statistics a network ends training with average the last few
batches of padded, randomly scaled crops (and jittered CutMix images for the semi-supervised
methods); inference sees whole images at ``data.eval_size``.  Estimating the statistics on those
instead changes no learned weight and takes seconds.
"""

from __future__ import annotations

import time

from rabusseg.engine.state import TrainingRun
from rabusseg.engine.streams import SplitIds
from rabusseg.inference.recalibrate import choose_images, recalibrate_network


def precise_bn_ids(ids: SplitIds, semi_supervised: bool) -> list[str]:
    """The images the statistics come from: the labelled list, plus the unlabelled one for the
    semi-supervised methods (the supervised baseline never reads unlabelled images); never an
    image of the validation or test list."""
    held_out = set(ids.val) | set(ids.test)
    pool = ids.labeled + (ids.unlabeled if semi_supervised else [])
    return [i for i in dict.fromkeys(pool) if i not in held_out]


def recalibrate_run(run: TrainingRun) -> None:
    """Re-estimate the BatchNorm statistics of the network the run evaluates and ships; log what was done.

    Only that one (``train.eval_weights``: the student by default): the other network of a
    mean-teacher run is not what inference runs, and on a CPU each costs seconds of the budget.
    Deterministic and free of the training random streams, so a resumed run repeats it exactly;
    every rank runs the same images (SyncBatchNorm averages identical batches).
    """
    if run.ids is None:
        run.logger.message("train.precise_bn: skipped (this run was fed batches, not image lists)")
        return
    d, t = run.config.data, run.config.train
    started = time.perf_counter()
    pool = precise_bn_ids(run.ids, run.config.method.semi_supervised)
    ids = choose_images(pool, t.precise_bn_images, seed=t.seed)
    network = run.eval_network()
    recalibrate_network(network, run.ids.folder, ids, d.eval_size, d.eval_resize,
                        memory_format=run.precision.memory_format, device=run.info.device)  # fmt: skip
    name = "teacher" if network is run.teacher else "student"
    run.logger.message(f"precise BatchNorm statistics of the {name} from {len(ids)} training images at "
                       f"{d.eval_size} px ({d.eval_resize}) "
                       f"in {time.perf_counter() - started:.1f} s (train.precise_bn)")  # fmt: skip
