"""One rank of a distributed training run: ``python -m tunelab.train.launched <folder>``.

Started by tunelab.train.distributed.launch through torch.distributed.run or accelerate
launch, never by hand. Reads the inputs the launcher wrote into ``<folder>`` and runs
tunelab.train.train in the role "rank": the Trainer trains, rank 0 records the outcome,
evaluation is left to the launcher. Rank 0 sends the curve to the launcher's MLflow run.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from tunelab.errors import TunelabError


def main(folder: Path) -> int:
    """Train this rank's share; 0 when the Trainer finished."""
    import pandas as pd

    from tunelab.config import from_dict
    from tunelab.train import distributed, train
    from tunelab.workspace import Workspace

    distributed.watch_launcher()
    request = json.loads((folder / distributed.REQUEST_FILE).read_text(encoding="utf-8"))
    raw = json.loads((folder / distributed.CONFIG_FILE).read_text(encoding="utf-8"))
    cfg = from_dict(raw, where=str(folder / distributed.CONFIG_FILE))
    data = {
        split: pd.read_parquet(folder / distributed.DATA_DIR / f"{split}.parquet")
        for split in request["splits"]
    }
    workspace = Workspace(Path(request["workspace"]))
    output_dir = Path(request["output_dir"])
    try:
        with distributed.playing("rank"), _live_curve(output_dir, workspace):
            train(cfg, data, workspace, request["data_version"], output_dir)
    except distributed.FitDone:
        return 0
    except TunelabError as exc:
        distributed.record_error(folder, exc)
        raise
    raise RuntimeError("training returned without recording its outcome")


@contextlib.contextmanager
def _live_curve(output_dir: Path, workspace):
    """Rank 0 sends each logging step to the MLflow run the launcher opened."""
    from tunelab.train import distributed

    uri = os.environ.get(distributed.TRACKING_ENV)
    if not uri or distributed.rank() != 0:
        yield
        return
    from tunelab.lifecycle import live, tracking

    run = live.LiveRun.read(output_dir)
    if run is None:
        yield
        return
    target = tracking.resolve(workspace, uri)
    with live.following(target, run):
        yield


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
