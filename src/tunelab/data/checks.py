"""The validation gate: Great Expectations suites built in code, run through checkpoints.

One call validates one dataset's splits as two GX batches:

- ``<dataset>-examples``: every split stacked, one row per example, with a ``split``
  column and derived per-row columns for the cross-row checks (repeats an earlier
  row, also in another split, chosen same as rejected, token count, over max length,
  mojibake; for chat: is a conversation, roles known, no empty turn, turn lengths,
  turns alternate, has an assistant turn, ends with one);
- ``<dataset>-classes`` (classification): one row per label with its counts overall
  and per split.

A checkpoint passes the same batch parameters to each of its validation definitions,
so each batch has its own suite, validation definition and checkpoint; every
checkpoint updates the Data Docs under ``workspace.gx_dir``. Pass or fail is always
decided by a GX expectation; pandas only derives the columns those expectations read.
The texts that explain a failure are built in ``check_messages``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from tunelab.config import RunConfig
from tunelab.data import chat
from tunelab.data import check_messages as messages
from tunelab.data.check_messages import (
    CHAT_CHECKS,
    CLASS_ROWS,
    LEAKED,
    MOJIBAKE,
    MOJIBAKE_PATTERN,
    REPEATS,
    SAME_PAIR,
    SPLIT,
    TIMES_SMALLEST,
    TOKENS,
    TOO_LONG,
    Failure,
    describe_failures,
    row_keys,
)
from tunelab.data.schema import REQUIRED, SOURCE_ROW, columns_for, normalise_key, text_columns
from tunelab.data.tokens import TokenCounter, whitespace_counter
from tunelab.errors import DataValidationError
from tunelab.workspace import Workspace

DATASOURCE = "tunelab"


@dataclass
class ValidationOutcome:
    dataset: str
    success: bool
    failures: list[Failure]
    statistics: dict
    results: dict
    docs_path: str | None
    warnings: list[str] = field(default_factory=list)  # for the report; the gate passed them


def validate_splits(
    splits: dict[str, pd.DataFrame],
    cfg: RunConfig,
    workspace: Workspace,
    token_counter: TokenCounter | None = None,
) -> ValidationOutcome:
    """Run the gate's expectation suites over the splits; never raises for bad data."""
    counter = token_counter or whitespace_counter()
    task, name = cfg.data.task, cfg.data.name
    limits = (cfg.data.checks.min_chars, cfg.data.checks.max_chars)
    examples = _examples_frame(splits, task, cfg.model.max_length, counter, limits)
    labels = _label_set(cfg, examples)
    classes = _classes_frame(examples, labels, splits) if labels is not None else None

    ctx = _context(workspace)
    batches = [("examples", examples, _examples_suite(cfg, examples, counter), [SPLIT, SOURCE_ROW])]
    if classes is not None and len(classes):
        batches.append(("classes", classes, _classes_suite(cfg, splits), ["label"]))
    run_id = _run_id(name)
    runs: dict[str, dict] = {}
    pages: dict[str, str] = {}
    for kind, frame, suite, index_columns in batches:
        key, result = _run_checkpoint(ctx, f"{name}-{kind}", frame, suite, index_columns, run_id)
        runs[kind] = result.to_json_dict()
        page = _docs_page(ctx, key)
        if page:
            pages[kind] = page

    seen = messages.Seen(task, examples, classes, counter, cfg.model.max_length, limits)
    failures = [f for result in runs.values() for f in messages.failures(result, seen)]
    warnings = messages.warnings(seen, cfg.data.checks.max_mojibake_share)
    success = all(r["success"] for r in runs.values())
    statistics = _statistics(runs.values())
    index = _docs_index(workspace)
    failed = [pages[k] for k, r in runs.items() if not r["success"] and k in pages]
    # One page when one validation tells the story, else the index that lists them all.
    if len(failed) == 1:
        docs_path = failed[0]
    elif success and len(pages) == 1:
        docs_path = next(iter(pages.values()))
    else:
        docs_path = index
    results = {
        "dataset": name,
        "task": task,
        "success": success,
        "token_counter": counter.label,
        "token_counter_fallback": counter.fallback,
        "max_length": cfg.model.max_length,
        "thresholds": cfg.data.checks.model_dump(mode="json"),
        "labels": labels,
        "statistics": statistics,
        "failures": [asdict(f) for f in failures],
        "warnings": warnings,
        "data_docs": {"index": index, **pages},
        "validations": runs,
    }
    return ValidationOutcome(name, success, failures, statistics, results, docs_path, warnings)


def raise_for_failures(outcome: ValidationOutcome) -> None:
    """Raise DataValidationError naming every failed check when the gate did not pass."""
    if not outcome.success:
        raise DataValidationError(describe_failures(outcome), outcome.failures, outcome.docs_path)


# --- frames -------------------------------------------------------------------------


def _examples_frame(
    splits: dict[str, pd.DataFrame],
    task: str,
    max_length: int,
    counter: TokenCounter,
    char_limits: tuple[int, int] = (1, 4000),
) -> pd.DataFrame:
    """All splits stacked with the derived columns the cross-row expectations read;
    ``char_limits`` (data.checks.min_chars, max_chars) bound each chat turn."""
    parts = []
    for split_name, frame in splits.items():
        present = [c for c in columns_for(task, frame) if c in frame.columns]
        part = frame[present].copy()
        for col in present:
            part[col] = frame[col].map(_as_text).astype(object)
        rows = frame[SOURCE_ROW] if SOURCE_ROW in frame.columns else range(1, len(frame) + 1)
        part[SOURCE_ROW] = pd.Series(list(rows), index=part.index, dtype="int64")
        part.insert(0, SPLIT, split_name)
        parts.append(part)
    stacked = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({SPLIT: []})
    for col in columns_for(task, stacked):
        if col in stacked.columns:
            stacked[col] = stacked[col].astype(object).where(stacked[col].notna(), None)

    keys = row_keys(stacked, task)
    known = keys != ""
    stacked[REPEATS] = (keys.duplicated(keep="first") & known).astype("int64")
    splits_per_key = stacked[SPLIT].groupby(keys).transform("nunique")
    stacked[LEAKED] = ((splits_per_key > 1) & known).astype(bool)
    if task == "preference" and {"chosen", "rejected"} <= set(stacked.columns):
        chosen = stacked["chosen"].map(normalise_key)
        rejected = stacked["rejected"].map(normalise_key)
        stacked[SAME_PAIR] = ((chosen == rejected) & (chosen != "")).astype(bool)
    if task == "chat":
        _add_chat_columns(stacked, char_limits)
    stacked[TOKENS] = counter.example_lengths(task, stacked).astype("int64")
    stacked[TOO_LONG] = (stacked[TOKENS] > max_length).astype("int64")
    mojibake = pd.Series(False, index=stacked.index, dtype=bool)
    for col in (c for c in columns_for(task, stacked) if c in stacked.columns):
        mojibake |= stacked[col].map(_mojibake).astype(bool)
    stacked[MOJIBAKE] = mojibake.astype("int64")
    return stacked


def _add_chat_columns(stacked: pd.DataFrame, char_limits: tuple[int, int]) -> None:
    """One boolean column per chat check (chat.inspect); True where the row passes."""
    if chat.COLUMN not in stacked.columns:
        return  # the column-exists expectation reports it
    seen = [chat.inspect(v) for v in stacked[chat.COLUMN]]
    passes = {
        "chat_format": lambda i: not i.problem,
        "chat_roles": lambda i: not i.unknown_roles,
        "chat_empty": lambda i: not i.empty,
        "chat_length": lambda i: not i.outside(*char_limits),
        "chat_order": lambda i: not i.order,
        "chat_assistant": lambda i: i.has_assistant,
        "chat_ends": lambda i: i.ends_with_assistant,
    }
    for kind, derived in CHAT_CHECKS.items():
        stacked[derived] = pd.Series(
            [passes[kind](i) for i in seen], index=stacked.index, dtype=bool
        )


def _as_text(value: object) -> object:
    """Nulls stay None; anything else becomes a string so text expectations can run."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value if isinstance(value, str) else str(value)


def _mojibake(value: object) -> bool:
    return isinstance(value, str) and MOJIBAKE_PATTERN.search(value) is not None


def _label_set(cfg: RunConfig, examples: pd.DataFrame) -> list[str] | None:
    if cfg.data.task != "classification" or "label" not in examples.columns:
        return None
    if cfg.data.labels:
        return list(cfg.data.labels)
    return sorted({v for v in examples["label"] if isinstance(v, str) and v})


def _classes_frame(
    examples: pd.DataFrame, labels: list[str], splits: dict[str, pd.DataFrame]
) -> pd.DataFrame:
    """One row per label: rows overall, per split, and times the smallest non-empty class."""
    table = pd.DataFrame({"label": labels})
    counts = examples.groupby([SPLIT, "label"]).size() if len(examples) else pd.Series()
    for split_name in splits:
        table[f"rows_in_{split_name}"] = [int(counts.get((split_name, lab), 0)) for lab in labels]
    per_split = [f"rows_in_{s}" for s in splits]
    table[CLASS_ROWS] = table[per_split].sum(axis=1).astype("int64") if per_split else 0
    smallest = table.loc[table[CLASS_ROWS] > 0, CLASS_ROWS].min()
    ratio = table[CLASS_ROWS] / smallest if smallest and smallest > 0 else math.nan
    table[TIMES_SMALLEST] = pd.Series(ratio, index=table.index, dtype="float64").where(
        table[CLASS_ROWS] > 0
    )
    return table


# --- suites -------------------------------------------------------------------------


def _examples_suite(cfg: RunConfig, examples: pd.DataFrame, counter: TokenCounter):
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    task, checks = cfg.data.task, cfg.data.checks
    present = set(examples.columns)

    expectations: list = []
    add = _adder(expectations)

    add(
        gxe.ExpectTableRowCountToBeBetween,
        "the dataset has at least one row",
        "at least 1 row",
        "rows",
        min_value=1,
    )
    for col in REQUIRED[task]:
        add(
            gxe.ExpectColumnToExist,
            f"column '{col}' exists",
            f"required for a {task} dataset",
            "column",
            column=col,
        )
    for col in columns_for(task, examples):
        if col not in present:
            continue
        add(
            gxe.ExpectColumnValuesToNotBeNull,
            f"every row has a {col}",
            "allowed: no missing values",
            "null",
            column=col,
        )
        add(
            gxe.ExpectColumnValuesToMatchRegex,
            f"no {col} is empty or blank",
            "allowed: no empty strings",
            "blank",
            column=col,
            regex=r"\S",
        )
    if task == "classification" and cfg.data.labels and "label" in present:
        add(
            gxe.ExpectColumnValuesToBeInSet,
            "labels are in the declared set",
            f"allowed: {', '.join(cfg.data.labels)}",
            "label_set",
            column="label",
            value_set=list(cfg.data.labels),
        )
    # A chat cell is JSON: its turns are measured instead (a chat check below).
    for col in text_columns(task, examples) if task != "chat" else []:
        if col not in present:
            continue
        # Blank texts are the blank check's; counting them here too would report them twice.
        add(
            gxe.ExpectColumnValueLengthsToBeBetween,
            f"each {col} is {checks.min_chars} to {checks.max_chars} characters long",
            f"{checks.min_chars} to {checks.max_chars} characters",
            "length",
            column=col,
            min_value=checks.min_chars,
            max_value=checks.max_chars,
            row_condition=Column(col) != "",
        )
    if task == "chat":
        _add_chat_expectations(add, present, gxe, checks)
    key_words = {"classification": "text", "chat": "conversation"}.get(task, "prompt")
    add(
        gxe.ExpectColumnMeanToBeBetween,
        f"at most {checks.max_duplicate_rate:.1%} of rows repeat an earlier row "
        f"(normalised {key_words})",
        f"at most {checks.max_duplicate_rate:.1%} of rows",
        "duplicates",
        column=REPEATS,
        min_value=0,
        max_value=checks.max_duplicate_rate,
    )
    add(
        gxe.ExpectColumnValuesToBeInSet,
        "no example appears in more than one split (leakage)",
        "allowed: none; each example in exactly one split",
        "leakage",
        column=LEAKED,
        value_set=[False],
    )
    if SAME_PAIR in present:
        add(
            gxe.ExpectColumnValuesToBeInSet,
            "chosen and rejected responses differ",
            "allowed: none equal after normalisation (case, spaces)",
            "same_pair",
            column=SAME_PAIR,
            value_set=[False],
        )
    max_length, share = cfg.model.max_length, checks.max_too_long_share
    add(
        gxe.ExpectColumnMeanToBeBetween,
        f"at most {share:.1%} of examples are longer than {max_length} tokens "
        f"({counter.framing(task)}, counted as {counter.label})",
        f"at most {share:.1%} of examples over model.max_length={max_length} tokens, "
        f"counted as {counter.label}",
        "too_long",
        column=TOO_LONG,
        min_value=0,
        max_value=share,
        meta={"token_counter": counter.label, "max_length": max_length},
    )
    mojibake = checks.max_mojibake_share
    add(
        gxe.ExpectColumnMeanToBeBetween,
        f"at most {mojibake:.1%} of rows show mojibake (UTF-8 read as cp1252 or latin-1, "
        "e.g. 'Ã©' for 'é')",
        f"at most {mojibake:.1%} of rows (data.checks.max_mojibake_share); any is a warning",
        "mojibake",
        column=MOJIBAKE,
        min_value=0,
        max_value=mojibake,
    )
    return gx.ExpectationSuite(
        name=f"{cfg.data.name}-examples",
        expectations=expectations,
        meta={
            "notes": f"tunelab validation gate for the {task} dataset '{cfg.data.name}': "
            "one row per example, all splits stacked, with derived columns."
        },
    )


# What each chat check expects, in words: (check, threshold) by kind of check.
_CHAT_EXPECTATIONS = {
    "chat_format": (
        "every conversation is a list of turns with a role and a text content",
        "allowed: none malformed (OpenAI {role, content} or ShareGPT {from, value} turns)",
    ),
    "chat_roles": (
        "every turn's role is system, user or assistant (after data.chat.roles)",
        "allowed: system, user, assistant",
    ),
    "chat_empty": (
        "no conversation is empty and no turn is empty or blank",
        "allowed: none; every turn has visible text",
    ),
    "chat_order": (
        "turns alternate user, assistant, user, ... after an optional first system turn",
        "allowed: a system turn only first; no two user or assistant turns in a row",
    ),
    "chat_assistant": (
        "every conversation has at least one assistant turn",
        "at least 1 assistant turn per conversation",
    ),
    "chat_ends": (
        "every conversation ends with an assistant turn",
        "allowed: the last turn is the assistant's",
    ),
}


def _add_chat_expectations(add, present: set[str], gxe, checks) -> None:
    low, high = checks.min_chars, checks.max_chars
    expected = _CHAT_EXPECTATIONS | {
        "chat_length": (
            f"each turn's text is {low} to {high} characters long",
            f"{low} to {high} characters per turn (data.checks.min_chars, max_chars)",
        )
    }
    for kind, column in CHAT_CHECKS.items():
        if column in present:
            check, threshold = expected[kind]
            add(
                gxe.ExpectColumnValuesToBeInSet,
                check,
                threshold,
                kind,
                column=column,
                value_set=[True],
            )


def _classes_suite(cfg: RunConfig, splits: dict[str, pd.DataFrame]):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    checks = cfg.data.checks

    expectations: list = []
    add = _adder(expectations)

    # One row per label: a single class cannot train a classifier.
    add(
        gxe.ExpectTableRowCountToBeBetween,
        "the dataset has at least two labels",
        "at least 2 distinct labels",
        "label_count",
        min_value=2,
    )
    for split_name, frame in splits.items():
        if len(frame):
            add(
                gxe.ExpectColumnValuesToBeBetween,
                f"every label has rows in the {split_name} split",
                "at least 1 row of each label in every non-empty split",
                "class_in_split",
                column=f"rows_in_{split_name}",
                min_value=1,
                meta={"split": split_name},
            )
    add(
        gxe.ExpectColumnValuesToBeBetween,
        f"every label has at least {checks.min_rows_per_class} rows overall",
        f"at least {checks.min_rows_per_class} rows per label",
        "class_min",
        column=CLASS_ROWS,
        min_value=checks.min_rows_per_class,
    )
    add(
        gxe.ExpectColumnMaxToBeBetween,
        f"the largest class is at most {checks.max_imbalance_ratio:g} times the smallest",
        f"largest/smallest class at most {checks.max_imbalance_ratio:g}",
        "imbalance",
        column=TIMES_SMALLEST,
        max_value=checks.max_imbalance_ratio,
    )
    return gx.ExpectationSuite(
        name=f"{cfg.data.name}-classes",
        expectations=expectations,
        meta={
            "notes": f"tunelab validation gate for '{cfg.data.name}': one row per label "
            "with its row counts overall and per split."
        },
    )


def _adder(expectations: list):
    """add(Expectation, check, threshold, kind, **kwargs): plain-words description and meta."""

    def add(expectation_cls, check: str, threshold: str, kind: str, **kwargs) -> None:
        meta = {"check": kind, "threshold": threshold, **kwargs.pop("meta", {})}
        expectations.append(expectation_cls(description=check, meta=meta, **kwargs))

    return add


# --- GX context and runs ------------------------------------------------------------


def _context(workspace: Workspace):
    """The file context at workspace.gx_dir (context_root_dir: no extra gx/ level)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    fresh = not (workspace.gx_dir / "great_expectations.yml").is_file()
    ctx = gx.get_context(mode="file", context_root_dir=str(workspace.gx_dir))
    if fresh:
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        ctx.variables.save()
    return ctx


def _run_id(dataset: str):
    from great_expectations.core.run_identifier import RunIdentifier

    return RunIdentifier(run_name=f"{dataset}-gate", run_time=datetime.now(UTC))


def _run_checkpoint(ctx, name: str, frame: pd.DataFrame, suite, index_columns, run_id):
    """Validate one in-memory frame through its checkpoint; returns (result id, result)."""
    import great_expectations as gx

    try:
        source = ctx.data_sources.get(DATASOURCE)
    except KeyError:
        source = ctx.data_sources.add_pandas(DATASOURCE)
    try:
        asset = source.get_asset(name)
    except LookupError:
        asset = source.add_dataframe_asset(name)
    try:
        batch = asset.get_batch_definition("all-rows")
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe("all-rows")
    suite = ctx.suites.add_or_update(suite)
    definition = ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    checkpoint = ctx.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update-data-docs")],
            result_format={
                "result_format": "SUMMARY",
                "partial_unexpected_count": 20,
                "unexpected_index_column_names": list(index_columns),
            },
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
    ((key, result),) = outcome.run_results.items()
    return key, result


def _docs_page(ctx, key) -> str | None:
    for site in ctx.get_docs_sites_urls(resource_identifier=key) or []:
        url = site.get("site_url") or ""
        if url.startswith("file://"):
            return str(Path(unquote(urlparse(url).path)))
    return None


def _docs_index(workspace: Workspace) -> str:
    return str(workspace.gx_dir / "uncommitted" / "data_docs" / "local_site" / "index.html")


def _statistics(results) -> dict:
    totals = {"evaluated": 0, "successful": 0, "unsuccessful": 0}
    for result in results:
        stats = result["statistics"]
        totals["evaluated"] += int(stats["evaluated_expectations"])
        totals["successful"] += int(stats["successful_expectations"])
        totals["unsuccessful"] += int(stats["unsuccessful_expectations"])
    evaluated = totals["evaluated"]
    totals["success_percent"] = 100.0 * totals["successful"] / evaluated if evaluated else 100.0
    return totals
