"""The validation gate's results in plain words: what each failed check saw, and where.

GX reports a failed expectation as counts and a few unexpected index rows; the texts here
name the rows (split and source row) and quote the offending values, read from the frames
the gate validated (built in ``checks``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from tunelab.data import chat
from tunelab.data.schema import SOURCE_ROW, columns_for, example_keys, key_column
from tunelab.data.tokens import TokenCounter

if TYPE_CHECKING:
    from tunelab.data.checks import ValidationOutcome

# The derived columns of the validated frames: checks.py builds them, the texts read them.
SPLIT = "split"
REPEATS = "repeats_earlier_row"
LEAKED = "also_in_another_split"
SAME_PAIR = "chosen_same_as_rejected"
TOKENS = "token_count"
TOO_LONG = "over_max_length"
CLASS_ROWS = "rows"
TIMES_SMALLEST = "times_smallest_class"
MOJIBAKE = "has_mojibake"
# Chat checks (data.task=chat): kind of check -> derived column, True where a row passes.
CHAT_CHECKS = {
    "chat_format": "is_conversation",
    "chat_roles": "roles_known",
    "chat_empty": "no_empty_turn",
    "chat_length": "turns_within_length",
    "chat_order": "turns_alternate",
    "chat_assistant": "has_assistant_turn",
    "chat_ends": "ends_with_assistant",
}

# UTF-8 bytes read as cp1252 or latin-1: a lead byte (Â Ã Ä Å, or â€ for quotes and
# dashes) followed by a character a continuation byte becomes. Conservative: such pairs
# hardly occur in real text, so a match is worth a warning.
_CONTINUATION = "\u0080-\u00bf€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
MOJIBAKE_PATTERN = re.compile(f"[ÂÃÄÅ][{_CONTINUATION}]|â€[{_CONTINUATION}]?")

SHOWN = 5  # rows or examples named in one failure


@dataclass
class Failure:
    """One failed check: what was expected, what was observed, the threshold."""

    check: str
    observed: str
    threshold: str
    split: str | None = None
    fix: str | None = None  # the config option (or source change) that would fix it


def describe_failures(outcome: ValidationOutcome) -> str:
    """Plain-words summary: each failed check with what was observed and the threshold."""
    stats = outcome.statistics
    if outcome.success:
        return (
            f"Dataset '{outcome.dataset}' passed the validation gate: "
            f"{stats['successful']} of {stats['evaluated']} checks passed."
        )
    lines = [
        f"Dataset '{outcome.dataset}' failed the validation gate: "
        f"{stats['unsuccessful']} of {stats['evaluated']} checks failed."
    ]
    for number, failure in enumerate(outcome.failures, 1):
        where = f" [{failure.split} split]" if failure.split else ""
        lines.append(f"  {number}. Expected: {failure.check}{where}")
        lines.append(f"     Observed: {failure.observed}")
        lines.append(f"     Threshold: {failure.threshold}")
        if failure.fix:
            lines.append(f"     Fix: {failure.fix}")
    fallback = outcome.results.get("token_counter_fallback")
    if fallback:
        lines.append(f"Token lengths are whitespace estimates: {fallback}.")
    if outcome.docs_path:
        lines.append(f"Data Docs (every check and its result): {outcome.docs_path}")
    lines.append(
        "Nothing was versioned. Fix the named rows in the source data, or set the option "
        "named under each check in the config (or override it, e.g. "
        "`--set data.clean.drop_duplicates=true`), then prepare the data again."
    )
    return "\n".join(lines)


def row_keys(stacked: pd.DataFrame, task: str) -> pd.Series:
    """Each row's normalised example key; blank for all rows when a key column is missing."""
    try:
        return example_keys(stacked, task)
    except KeyError:
        return pd.Series("", index=stacked.index, dtype=object)


@dataclass
class Seen:
    """What the failure texts may quote: the validated frames and the counter."""

    task: str
    examples: pd.DataFrame
    classes: pd.DataFrame | None
    counter: TokenCounter
    max_length: int
    char_limits: tuple[int, int] = (1, 4000)  # data.checks.min_chars, max_chars


def failures(run: dict, seen: Seen) -> list[Failure]:
    """One Failure per unsuccessful expectation of one validation result (a JSON dict)."""
    out = []
    for item in run["results"]:
        if item["success"]:
            continue
        config = item["expectation_config"]
        meta = config.get("meta") or {}
        check = config.get("description") or config["type"]
        threshold = meta.get("threshold", "")
        fix = fix_for(meta.get("check"), seen)
        exception = item.get("exception_info") or {}
        if exception.get("raised_exception"):
            observed = f"the check could not run: {exception.get('exception_message')}"
            out.append(Failure(check, observed, threshold, meta.get("split"), fix))
            continue
        result = item["result"]
        if "observed_value" in result and result["observed_value"] is None:
            # Aggregates (means, maxima) over no rows: nothing to measure.
            out.append(
                Failure(check, "nothing to measure: no rows", threshold, meta.get("split"), fix)
            )
            continue
        describe = _OBSERVED.get(meta.get("check"), _observed_generic)
        observed, split = describe(result, config.get("kwargs") or {}, seen)
        out.append(Failure(check, observed, threshold, meta.get("split") or split, fix))
    return out


def fix_for(kind: str | None, seen: Seen) -> str | None:
    """The option that would make a failed check pass (or what to change in the source)."""
    if kind == "too_long":
        raise_it = "raise model.max_length or data.checks.max_too_long_share"
        if seen.task == "preference":
            return f"data.truncation=keep_end (or keep_start, or drop), or {raise_it}"
        if seen.task == "chat":
            return f"{raise_it}, or split or shorten the long conversations in the source"
        if seen.task == "prompts":
            # Only the prompt is in the data; the answer's length is the training config's.
            return f"{raise_it} (it bounds the prompt alone), or shorten the prompts in the source"
        return f"{raise_it}, or shorten the texts in the source"
    if kind == "leakage":
        fix = "data.clean.drop_leaked=train (drops the train copies; held-out splits stay whole)"
        if _held_out_leaks(seen):
            fix += "; examples in both validation and test must be fixed in the source"
        return fix
    return _FIXES.get(kind or "")


def _held_out_leaks(seen: Seen) -> bool:
    """Whether some leaked example is in two splits other than train."""
    examples = seen.examples
    if LEAKED not in examples.columns or not examples[LEAKED].any():
        return False
    leaked = examples[examples[LEAKED]]
    keys = row_keys(leaked, seen.task)
    held_out = leaked[SPLIT].ne("train")
    return bool((leaked[SPLIT][held_out].groupby(keys[held_out]).nunique() > 1).any())


_FIXES = {
    "rows": "check data.source and data.source_splits (and data.max_rows)",
    "column": "map the source's column with data.columns (or data.split_columns for one split)",
    "null": "data.clean.drop_empty=true, or fill the values in the source",
    "blank": "data.clean.drop_empty=true (blank counts as empty), or fill the values in the source",
    "label_set": "add the labels to data.labels, or fix those rows in the source",
    "length": "raise data.checks.max_chars (or lower data.checks.min_chars); empty texts: "
    "data.clean.drop_empty=true",
    "duplicates": "data.clean.drop_duplicates=true (repeats within a split) and "
    "data.clean.drop_leaked=train (repeats across splits), or raise "
    "data.checks.max_duplicate_rate",
    "same_pair": "fix or remove those pairs in the source",
    "label_count": "check data.columns (which column is the label) and data.labels",
    "class_in_split": "add rows of that label, or change data.splits or data.seed",
    "class_min": "add rows of that label, or lower data.checks.min_rows_per_class",
    "imbalance": "raise data.checks.max_imbalance_ratio, or balance the classes in the source",
    "mojibake": "re-read the source with the right encoding (it is UTF-8 read as cp1252 or "
    "latin-1: re-save the file as UTF-8), or raise data.checks.max_mojibake_share",
    "chat_format": "give each row a list of turns, {role, content} (OpenAI) or {from, value} "
    "(ShareGPT; data.chat.format picks one when auto-detection does not); a CSV cell holds "
    "that list as JSON text. Fix or remove those rows in the source",
    "chat_roles": "map the source's role names onto system/user/assistant with "
    "data.chat.roles, e.g. {bot: assistant}, or remove those turns in the source",
    "chat_empty": "data.clean.drop_empty=true (drops those conversations), or fill or remove "
    "the empty turns in the source",
    "chat_length": "raise data.checks.max_chars (or lower data.checks.min_chars), or shorten "
    "those turns in the source",
    "chat_order": "in the source, start each conversation with a user turn (after an optional "
    "system turn), merge consecutive turns of one role, and keep system turns first",
    "chat_assistant": "add the assistant's reply to those conversations in the source, or "
    "remove them",
    "chat_ends": "remove the turns after the last assistant reply, or add the reply, in the source",
}


def _rows(records: list[dict], limit: int = SHOWN) -> str:
    """'train rows 4, 9; test row 2' for the first few rows."""
    grouped: dict[str, list[str]] = {}
    for entry in records[:limit]:
        grouped.setdefault(str(entry.get(SPLIT)), []).append(str(entry.get(SOURCE_ROW)))
    return "; ".join(
        f"{s} row{'s' if len(r) > 1 else ''} {', '.join(r)}" for s, r in grouped.items()
    )


def _more(total: int, shown: int) -> str:
    return f" and {total - shown} more" if total > shown else ""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _quote(text: object, width: int = 40) -> str:
    value = str(text)
    return repr(value if len(value) <= width else value[: width - 3] + "...")


def _unexpected(result: dict) -> tuple[list[dict], int]:
    return result.get("partial_unexpected_index_list") or [], int(
        result.get("unexpected_count") or 0
    )


def _only_split(result: dict) -> str | None:
    """The split of every unexpected row, when all are listed and they share one."""
    index_list, count = _unexpected(result)
    names = {e.get(SPLIT) for e in index_list}
    if len(names) == 1 and None not in names and len(index_list) >= count:
        return str(names.pop())
    return None


def _observed_generic(result, kwargs, seen):
    if "unexpected_count" in result:
        index_list, count = _unexpected(result)
        rows = _rows(index_list)
        named = f": {rows}{_more(count, min(len(index_list), SHOWN))}" if rows else ""
        return f"{_plural(count, 'row')} failed{named}", _only_split(result)
    return f"observed {result.get('observed_value')!r}", None


def _observed_rows(result, kwargs, seen):
    return f"{result.get('observed_value')} rows in all splits", None


def _observed_column(result, kwargs, seen):
    found = [c for c in seen.examples.columns if c in columns_for(seen.task, seen.examples)]
    return f"column '{kwargs.get('column')}' is missing; canonical columns found: {found}", None


def _observed_map(what: str):
    def describe(result, kwargs, seen):
        index_list, count = _unexpected(result)
        shown = min(len(index_list), SHOWN)
        return (
            f"{_plural(count, 'row')} {what.format(col=kwargs.get('column'))}: "
            f"{_rows(index_list)}{_more(count, shown)}",
            _only_split(result),
        )

    return describe


def _observed_label_set(result, kwargs, seen):
    index_list, count = _unexpected(result)
    by_value: dict[str, list[dict]] = {}
    for entry in index_list:
        by_value.setdefault(str(entry.get("label")), []).append(entry)
    parts = [
        f"{_quote(v)} ({_rows(entries)}{_more(len(entries), min(len(entries), SHOWN))})"
        for v, entries in by_value.items()
    ]
    tail = f"; {count - len(index_list)} more rows" if count > len(index_list) else ""
    return (
        f"{_plural(count, 'row')} with labels outside the set: {', '.join(parts)}{tail}",
        _only_split(result),
    )


def _observed_length(result, kwargs, seen):
    column = kwargs.get("column")
    index_list, count = _unexpected(result)
    named = [
        f"{e.get(SPLIT)} row {e.get(SOURCE_ROW)} ({len(str(e.get(column, '')))} characters)"
        for e in index_list[:SHOWN]
    ]
    return (
        f"{_plural(count, 'row')} with a {column} outside the limits: "
        f"{', '.join(named)}{_more(count, len(named))}",
        _only_split(result),
    )


def _groups(seen: Seen, mask: pd.Series) -> list[pd.DataFrame]:
    """Rows selected by mask, grouped by their normalised key, in order of appearance."""
    keys = row_keys(seen.examples, seen.task)
    chosen = seen.examples[mask]
    return [group for _, group in chosen.groupby(keys[chosen.index], sort=False)]


def _named_group(group: pd.DataFrame) -> str:
    return _rows(group[[SPLIT, SOURCE_ROW]].to_dict("records"), limit=4) + _more(len(group), 4)


def _shown(seen: Seen, value: object) -> str:
    """An example's key text as quoted in a message (a conversation on one line)."""
    if seen.task == "chat":
        return _quote(chat.preview(value, 60), 60)
    return _quote(value)


def _observed_duplicates(result, kwargs, seen):
    examples, column = seen.examples, key_column(seen.task)
    share = float(result.get("observed_value") or 0.0)
    keys = row_keys(examples, seen.task)
    repeated_keys = set(keys[examples[REPEATS] == 1])
    groups = _groups(seen, keys.isin(repeated_keys))
    named = [
        f"{_shown(seen, g.iloc[0][column])} x{len(g)} ({_named_group(g)})" for g in groups[:SHOWN]
    ]
    return (
        f"{share:.1%} of rows ({int(examples[REPEATS].sum())} of {len(examples)}) repeat "
        f"an earlier row: {'; '.join(named)}{_more(len(groups), len(named))}",
        None,
    )


def _observed_leakage(result, kwargs, seen):
    column = key_column(seen.task)
    groups = _groups(seen, seen.examples[LEAKED])
    named = [
        f"{_shown(seen, g.iloc[0][column])} in {' and '.join(dict.fromkeys(g[SPLIT]))} "
        f"({_named_group(g)})"
        for g in groups[:SHOWN]
    ]
    rows = int(seen.examples[LEAKED].sum())
    return (
        f"{_plural(len(groups), 'example')} leak across splits "
        f"({_plural(rows, 'row')}): {'; '.join(named)}{_more(len(groups), len(named))}",
        None,
    )


def _observed_too_long(result, kwargs, seen):
    examples = seen.examples
    share = float(result.get("observed_value") or 0.0)
    over = examples[examples[TOO_LONG] == 1].sort_values(TOKENS, ascending=False, kind="stable")
    longest = [
        f"{r[SPLIT]} row {r[SOURCE_ROW]} ({r[TOKENS]} tokens)"
        for r in over.head(SHOWN).to_dict("records")
    ]
    return (
        f"{share:.1%} of examples ({len(over)} of {len(examples)}) are longer than "
        f"{seen.max_length} tokens, counted as {seen.counter.label}; longest: "
        f"{', '.join(longest)}{_more(len(over), len(longest))}",
        None,
    )


def _observed_chat(kind: str, what: str, detail):
    """'2 conversations <what>: train row 4 (<detail>); test row 9 (...)'."""

    def describe(result, kwargs, seen):
        column = CHAT_CHECKS[kind]
        examples = seen.examples
        if column not in examples.columns:
            return _observed_generic(result, kwargs, seen)
        hits = examples[~examples[column].astype(bool)]
        named = [
            f"{r[SPLIT]} row {r[SOURCE_ROW]} ({detail(chat.inspect(r.get(chat.COLUMN)), seen)})"
            for r in hits.head(SHOWN).to_dict("records")
        ]
        splits = set(hits[SPLIT])
        return (
            f"{_plural(len(hits), 'conversation')} {what}: {'; '.join(named)}"
            f"{_more(len(hits), len(named))}",
            splits.pop() if len(splits) == 1 else None,
        )

    return describe


def _empty_detail(found: chat.Inspection, seen: Seen) -> str:
    if not found.roles:
        return "no turns"
    turns = ", ".join(str(n) for n in found.empty_turns)
    return f"turn{'s' if len(found.empty_turns) > 1 else ''} {turns} empty"


def _observed_mojibake(result, kwargs, seen):
    return mojibake_summary(seen) or f"observed {result.get('observed_value')!r}", None


def mojibake_summary(seen: Seen) -> str | None:
    """'2 of 40 rows (5.0%) show mojibake ...: train row 4 'cafÃ©', ...'; None if none."""
    examples = seen.examples
    if MOJIBAKE not in examples.columns or not examples[MOJIBAKE].any():
        return None
    hits = examples[examples[MOJIBAKE].astype(bool)]
    texts = [c for c in columns_for(seen.task, examples) if c in examples.columns]
    named = []
    for row in hits.head(SHOWN).to_dict("records"):
        value = next(
            (
                v
                for v in (row.get(c) for c in texts)
                if isinstance(v, str) and MOJIBAKE_PATTERN.search(v)
            ),
            "",
        )
        named.append(f"{row[SPLIT]} row {row[SOURCE_ROW]} {_quote(_around_match(value), 60)}")
    share = len(hits) / len(examples)
    return (
        f"{len(hits)} of {len(examples)} rows ({share:.1%}) show mojibake (UTF-8 text read "
        f"as cp1252 or latin-1, e.g. 'Ã©' for 'é'): {', '.join(named)}"
        f"{_more(len(hits), len(named))}"
    )


def _around_match(text: str, width: int = 16) -> str:
    """The matched characters with a little context either side."""
    found = MOJIBAKE_PATTERN.search(text)
    if not found:
        return text
    start, end = max(0, found.start() - width), found.end() + width
    return ("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")


def warnings(seen: Seen, max_mojibake_share: float) -> list[str]:
    """What the report should flag even when the gate passes."""
    summary = mojibake_summary(seen)
    if not summary:
        return []
    return [
        f"{summary}. The gate allows at most {max_mojibake_share:.1%} "
        f"(data.checks.max_mojibake_share). Fix: {_FIXES['mojibake']}."
    ]


def _observed_label_count(result, kwargs, seen):
    labels = ", ".join(_quote(label) for label in seen.classes["label"])
    return (
        f"{_plural(int(result.get('observed_value') or 0), 'label')} found ({labels}); "
        "a classifier needs at least two",
        None,
    )


def _observed_class_in_split(result, kwargs, seen):
    split_name = str(kwargs.get("column", "")).removeprefix("rows_in_")
    missing = [_quote(e.get("label")) for e in result.get("partial_unexpected_index_list") or []]
    size = int((seen.examples[SPLIT] == split_name).sum())
    return (
        f"no {split_name} rows for label(s) {', '.join(missing)} "
        f"(the {split_name} split has {_plural(size, 'row')})",
        split_name,
    )


def _observed_class_min(result, kwargs, seen):
    classes = seen.classes
    small = classes[classes[CLASS_ROWS] < kwargs.get("min_value", 0)]
    return "; ".join(
        f"label {_quote(r['label'])} has {_plural(int(r[CLASS_ROWS]), 'row')}"
        for r in small.to_dict("records")
    ), None


def _observed_imbalance(result, kwargs, seen):
    nonempty = seen.classes[seen.classes[CLASS_ROWS] > 0]
    big = nonempty.loc[nonempty[CLASS_ROWS].idxmax()]
    small = nonempty.loc[nonempty[CLASS_ROWS].idxmin()]
    ratio = float(result.get("observed_value") or math.nan)
    return (
        f"largest/smallest = {ratio:.2f}: label {_quote(big['label'])} has "
        f"{int(big[CLASS_ROWS])} rows, label {_quote(small['label'])} has "
        f"{int(small[CLASS_ROWS])}",
        None,
    )


_OBSERVED: dict[str, Any] = {
    "rows": _observed_rows,
    "column": _observed_column,
    "null": _observed_map("with no {col} (null)"),
    "blank": _observed_map("with an empty or blank {col}"),
    "label_set": _observed_label_set,
    "length": _observed_length,
    "duplicates": _observed_duplicates,
    "leakage": _observed_leakage,
    "same_pair": _observed_map("where chosen equals rejected"),
    "too_long": _observed_too_long,
    "mojibake": _observed_mojibake,
    "chat_format": _observed_chat(
        "chat_format", "malformed (not a list of turns)", lambda i, seen: i.problem
    ),
    "chat_roles": _observed_chat(
        "chat_roles",
        "with unknown roles",
        lambda i, seen: "roles " + ", ".join(_quote(r) for r in i.unknown_roles),
    ),
    "chat_empty": _observed_chat("chat_empty", "empty or with an empty turn", _empty_detail),
    "chat_length": _observed_chat(
        "chat_length",
        "with turns outside the length limits",
        lambda i, seen: _turn_lengths(i, seen),
    ),
    "chat_order": _observed_chat(
        "chat_order", "whose turns do not alternate user/assistant", lambda i, seen: i.order
    ),
    "chat_assistant": _observed_chat(
        "chat_assistant",
        "without an assistant turn",
        lambda i, seen: "turns: " + ", ".join(i.roles),
    ),
    "chat_ends": _observed_chat(
        "chat_ends",
        "not ending with an assistant turn",
        lambda i, seen: (
            f"ends with a {i.roles[-1]} turn; the last assistant turn is turn "
            f"{_last_assistant(i)} of {i.turns}"
        ),
    ),
    "label_count": _observed_label_count,
    "class_in_split": _observed_class_in_split,
    "class_min": _observed_class_min,
    "imbalance": _observed_imbalance,
}


def _last_assistant(found: chat.Inspection) -> int:
    """The 1-based number of the last assistant turn."""
    return len(found.roles) - found.roles[::-1].index("assistant")


def _turn_lengths(found: chat.Inspection, seen: Seen) -> str:
    """'turn 3: 5,210 characters' for each turn outside data.checks' limits."""
    outside = found.outside(*seen.char_limits)
    return ", ".join(f"turn {n}: {found.lengths[n - 1]:,} characters" for n in outside)
