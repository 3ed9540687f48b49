"""The end of a pipeline run: champions, the review page and the verdict.

A pipeline run ends Failed (PipelineError) when a required method failed; the review
and summary.json are written first, so the failure can be read next to the successes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from tunelab import markdown as md
from tunelab import report
from tunelab.data.prepare import PreparedDataset
from tunelab.errors import PipelineError
from tunelab.files import write_json_atomic
from tunelab.lifecycle import registry, tracking
from tunelab.pipeline import exchange, run
from tunelab.pipeline.method import MethodContext
from tunelab.pipeline.plan import Plan
from tunelab.pipeline.records import STEPS, MethodRecord
from tunelab.workspace import Workspace

SUMMARY_FILE = "summary.json"
# Where each parent run keeps the review and its dataset's report (MLflow artifact paths).
REVIEW_ARTIFACTS = "milestone-review"
DATA_REPORT_ARTIFACTS = "data-report"


@dataclass
class PipelineSummary:
    """What a pipeline run did; the CLI prints it, summary.json keeps it."""

    title: str
    report: str  # the review, Markdown
    html: str  # the review, standalone HTML
    wall_seconds: float
    # Seconds inside the library per step, summed over methods (0 when reused).
    step_seconds: dict[str, float]
    methods: list[MethodRecord]
    champions: dict[str, str | None]  # registered model -> champion version (None: none)
    # Scheduled retraining only: which datasets were retrained or skipped, and why.
    retrained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    decision: str = ""

    @property
    def total_step_seconds(self) -> float:
        return round(sum(self.step_seconds.values()), 2)

    @property
    def reused_steps(self) -> int:
        return sum(len(m.reused) for m in self.methods)

    @property
    def finished_steps(self) -> int:
        """Steps of the methods that finished (what could have been reused)."""
        return sum(len(STEPS) for m in self.methods if m.ok)

    def failed_required(self) -> list[MethodRecord]:
        return [m for m in self.methods if not m.ok and m.required]

    def to_dict(self) -> dict:
        data = asdict(self)
        for row, record in zip(data["methods"], self.methods, strict=True):
            row["outcome"] = record.registration.outcome if record.registration else None
        return data


def start_clock() -> float:
    return time.perf_counter()


def champions_of(records: list[MethodRecord], target: tracking.Tracking) -> dict:
    """Registered model name -> its champion version now (None when it has none)."""
    names = dict.fromkeys(
        r.registration.model_name for r in records if r.registration and r.registration.model_name
    )
    return {name: registry.aliases(target, name).get("champion") for name in names}


@dataclass(frozen=True)
class Closing:
    """The end of the methods: the review written and each model's champion now."""

    files: report.ReviewFiles
    champions: dict[str, str | None]


def close(
    plan: Plan,
    workspace: Workspace,
    prepared: list[PreparedDataset],
    records: list[MethodRecord],
    context: MethodContext,
    target: tracking.Tracking,
    flow_run_url: str | None = None,
) -> Closing:
    """Read the champions, write the review (Markdown + HTML under
    reports/milestone/<time>/) and log it, with the dataset's report, to each dataset's
    parent run, then end the parent runs (also when writing fails), so they span the whole
    pipeline; the published form of the review links those copies when MLflow is a
    server."""
    try:
        return _review(plan, workspace, prepared, records, context, target, flow_run_url)
    finally:
        run.end(context, records, target)


def _review(
    plan: Plan,
    workspace: Workspace,
    prepared: list[PreparedDataset],
    records: list[MethodRecord],
    context: MethodContext,
    target: tracking.Tracking,
    flow_run_url: str | None,
) -> Closing:
    exchange.localize(records, workspace)  # the review reads every run folder
    champions = champions_of(records, target)
    created = datetime.now(UTC)
    folder = workspace.reports_dir / "milestone" / created.strftime("%Y%m%dT%H%M%SZ")
    uploads = _uploads(folder, prepared, context)
    review = report.Review(
        title=plan.title,
        created=created.isoformat(timespec="seconds"),
        datasets=[_dataset_entry(p) for p in prepared],
        methods=records,
        champions=champions,
        flow_run_url=flow_run_url,
        mlflow=target.ui_command(),
    )
    published = md.EmbeddedRefs(url_of=artifact_urls(target, uploads), root=workspace.root)
    files = report.write_review(review, folder, published)
    for local, parent, artifact_path in uploads:
        if local.is_dir():
            tracking.log_folder(target, parent, local, artifact_path)
    return Closing(files, champions)


def _uploads(
    folder: Path, prepared: list[PreparedDataset], context: MethodContext
) -> list[tuple[Path, str, str]]:
    """(local folder, parent run, artifact path) of what is logged to MLflow: the review
    to every dataset's parent run, each dataset's report to its own."""
    reports = {p.name: Path(p.report_path).parent for p in prepared if p.report_path}
    uploads = []
    for dataset, parent in context.parents.items():
        if not parent:
            continue
        uploads.append((folder.resolve(), parent, REVIEW_ARTIFACTS))
        if dataset in reports:
            uploads.append((reports[dataset].resolve(), parent, DATA_REPORT_ARTIFACTS))
    return uploads


def artifact_urls(
    target: tracking.Tracking, uploads: list[tuple[Path, str, str]]
) -> Callable[[Path], str | None]:
    """path -> the URL of its first logged copy on the MLflow server (its get-artifact
    route, which a browser opens); None with a local store or for a file not logged."""
    if not target.is_server:
        return lambda path: None
    parts = urlsplit(target.uri)
    # Credentials stay out of the page: the browser asks for them if the server does.
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    base = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}/get-artifact"

    def url_of(path: Path) -> str | None:
        path = Path(path).resolve()
        for local, run_id, artifact_path in uploads:
            if path.is_relative_to(local) and path != local:
                inside = f"{artifact_path}/{path.relative_to(local).as_posix()}"
                return f"{base}?{urlencode({'path': inside, 'run_uuid': run_id})}"
        return None

    return url_of


def _dataset_entry(p: PreparedDataset) -> report.DatasetEntry:
    """The review's view of a prepared dataset (name, version, rows, gate, links)."""
    fields = (p.validation_summary, p.data_docs, p.report_path)
    return report.DatasetEntry(p.name, p.version_id, p.rows, *fields)


def finish(
    plan: Plan, records: list[MethodRecord], closing: Closing, started: float
) -> PipelineSummary:
    """The run's summary, written next to the review; PipelineError if a required
    method failed."""
    files = closing.files
    summary = PipelineSummary(
        title=plan.title,
        report=str(files.markdown_path),
        html=str(files.html_path),
        wall_seconds=round(time.perf_counter() - started, 2),
        step_seconds={
            step: round(sum(r.seconds.get(step, 0.0) for r in records), 2) for step in STEPS
        },
        methods=records,
        champions=closing.champions,
    )
    path = Path(files.folder) / SUMMARY_FILE
    write_json_atomic(path, summary.to_dict())
    failed = summary.failed_required()
    if failed:
        listing = "; ".join(f"{r.label}: {r.error}" for r in failed)
        raise PipelineError(
            f"{len(failed)} required method(s) failed: {listing}. The review in "
            f"{files.markdown_path} shows every method's result."
        )
    return summary
