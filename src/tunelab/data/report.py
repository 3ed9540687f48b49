"""The dataset-characteristics report for one dataset version: Markdown plus PNG plots.

Everything lands in ``workspace.reports_dir/data/<dataset>/<version>``: ``report.md``,
the plots it links by relative path, and nothing else. The same numbers come back as a
JSON-serialisable ``summary`` so callers can log them without parsing Markdown.

Each section is built by one function from the stacked splits (one row per example with
a ``split`` column) and returns its Markdown, its part of the summary and its plots.
Plots use matplotlib's object API (``Figure``, rendered by Agg), so no pyplot state or
GUI backend is involved. Everything taken from the data (labels, texts, n-grams, column
names) is escaped by ``markdown``, so a row's Markdown or HTML shows as text.

Chat data is described per conversation: conversations per split, turns per
conversation, lengths (tokens of the whole conversation as the gate counts them, through
the chat template when the tokenizer has one) and example conversations turn by turn.
Prompts data (GRPO) has no answers to describe: a prompt's tokens are counted as the gate
counts them, the prompt as the policy is given it, since only the prompt must fit
model.max_length.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tunelab import markdown as md
from tunelab.data import chat
from tunelab.data.clean import REASONS, CleaningRecord
from tunelab.data.schema import SOURCE_ROW, columns_for, example_keys, text_columns
from tunelab.data.tokens import TokenCounter, whitespace_counter
from tunelab.workspace import Workspace

SPLIT = "split"
SPLIT_ORDER = ("train", "validation", "test")
TOP_NGRAMS = 8
EXAMPLES_PER_CLASS = 3
EXAMPLE_ROWS = 5
EXAMPLE_CONVERSATIONS = 2
TURN_CHARS = 600  # of one turn shown in an example conversation
CONVERSATION = "conversation"  # the report's name for a chat row's turns together
CELL_CHARS = 200
LISTED_DROPS = 1000  # dropped rows listed in the report; the version's cleaning.json has all
_WORD = re.compile(r"\w+")


@dataclass
class DataReport:
    dataset: str
    version: str
    directory: Path
    markdown_path: Path
    markdown: str
    plots: list[Path]
    summary: dict


@dataclass
class _Section:
    markdown: str
    summary: dict = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)


def write_report(
    dataset: str,
    task: str,
    version: str,
    splits: dict[str, pd.DataFrame],
    workspace: Workspace,
    token_counter: TokenCounter | None = None,
    validation_summary: str | None = None,
    docs_path: str | None = None,
    seed: int = 0,
    cleaning: CleaningRecord | None = None,
    warnings: list[str] | None = None,
) -> DataReport:
    """Describe one dataset version in ``report.md`` with plots; return it and its numbers.

    ``cleaning`` (what data.clean dropped before the gate) gets its own section; each of
    ``warnings`` (what the gate let pass but flags, e.g. mojibake) is listed first.
    """
    counter = token_counter or whitespace_counter()
    directory = workspace.reports_dir / "data" / dataset / version
    directory.mkdir(parents=True, exist_ok=True)
    names = _split_names(splits)
    stacked = _stack(splits, names, task)
    if task == "chat":
        # The turns' texts stand for the JSON cell wherever words are counted.
        texts = [CONVERSATION]
        stacked[CONVERSATION] = stacked[chat.COLUMN].map(lambda v: "\n".join(chat.contents(v)))
        lengths = {CONVERSATION: _conversation_lengths(stacked, counter)}
    else:
        texts = text_columns(task, stacked)
        lengths = {col: _lengths(stacked[col], counter) for col in texts}
    if task == "prompts":
        lengths = {"prompt": _prompt_lengths(stacked, counter)}

    sections = [_warnings_section(warnings)] if warnings else []
    sections.append(_rows_section(stacked, names, "conversations" if task == "chat" else "rows"))
    if cleaning is not None:
        sections.append(_cleaning_section(cleaning))
    if task == "classification":
        sections.append(_labels_section(stacked, names, directory))
    if task == "chat":
        sections.append(_turns_section(stacked, names, counter, directory))
    sections.append(_lengths_section(stacked, lengths, names, counter, directory, task))
    if task == "preference":
        sections.append(_preference_section(lengths, directory))
    sections.append(_vocabulary_section(stacked, texts))
    sections.append(_duplicates_section(stacked, task, names))
    if task == "classification":
        sections.append(_ngrams_section(stacked))
    if task == "chat":
        sections.append(_conversations_section(stacked, seed))
    else:
        sections.append(_examples_section(stacked, task, seed))

    summary = {"dataset": dataset, "version": version, "task": task, "token_counter": counter.label}
    for section in sections:
        summary.update(section.summary)
    header = _header(
        dataset, version, task, summary["rows"], counter, validation_summary, docs_path, directory
    )
    markdown = "\n\n".join([header, *(s.markdown for s in sections)]) + "\n"
    markdown_path = directory / "report.md"
    markdown_path.write_text(markdown, encoding="utf-8")
    plots = [path for section in sections for path in section.plots]
    return DataReport(dataset, version, directory, markdown_path, markdown, plots, summary)


# --- frames -------------------------------------------------------------------------


def _split_names(splits: dict[str, pd.DataFrame]) -> list[str]:
    """train, validation, test first, then any other split in the order given."""
    return [n for n in SPLIT_ORDER if n in splits] + [n for n in splits if n not in SPLIT_ORDER]


def _stack(splits: dict[str, pd.DataFrame], names: list[str], task: str) -> pd.DataFrame:
    """All splits in one frame with a ``split`` column; SOURCE_ROW and extras dropped."""
    parts = []
    for name in names:
        frame = splits[name].drop(columns=[SOURCE_ROW], errors="ignore")
        part = frame.reindex(columns=columns_for(task, frame))
        part.insert(0, SPLIT, name)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _conversation_lengths(stacked: pd.DataFrame, counter: TokenCounter) -> pd.DataFrame:
    """Characters of a conversation's turns and its tokens as the gate counts them; NaN
    where the cell is not a conversation."""
    is_chat = stacked[chat.COLUMN].map(lambda v: chat.parse(v) is not None)
    tokens = counter.example_lengths("chat", stacked[[chat.COLUMN]])
    characters = stacked[CONVERSATION].str.len()
    return pd.DataFrame(
        {"characters": characters.where(is_chat), "tokens": tokens.where(is_chat)},
        index=stacked.index,
        dtype="float64",
    )


def _prompt_lengths(stacked: pd.DataFrame, counter: TokenCounter) -> pd.DataFrame:
    """Characters of a prompt and its tokens as the gate counts them (the prompt as the
    policy is given it); NaN where the cell is not text."""
    prompts = stacked["prompt"]
    is_text = prompts.map(lambda v: isinstance(v, str))
    characters = prompts.map(lambda v: len(v) if isinstance(v, str) else math.nan)
    tokens = counter.example_lengths("prompts", stacked[["prompt"]])
    return pd.DataFrame(
        {"characters": characters, "tokens": tokens.where(is_text)},
        index=stacked.index,
        dtype="float64",
    )


def _lengths(values: pd.Series, counter: TokenCounter) -> pd.DataFrame:
    """Characters and tokens per row; NaN where the cell is not text."""
    is_text = values.map(lambda v: isinstance(v, str))
    texts = values[is_text]
    return pd.DataFrame(
        {"characters": texts.str.len(), "tokens": texts.map(counter.count)},
        index=values.index,
        dtype="float64",
    )


# --- sections -----------------------------------------------------------------------


def _header(dataset, version, task, rows, counter, validation_summary, docs_path, directory):
    """Title, task, row totals, token counter, validation result and Data Docs link."""
    per_split = ", ".join(f"{md.inline(name)} {n:,}" for name, n in rows.items() if name != "total")
    lines = [
        f"# Dataset report: {md.inline(dataset)} @ {md.inline(version)}",
        "",
        f"- **Task:** {md.inline(task)}",
        f"- **Rows:** {rows['total']:,} ({per_split})",
        f"- **Token counts:** {md.inline(counter.label)}",
    ]
    if validation_summary:
        lines.append(f"- **Validation:** {md.inline(validation_summary)}")
    if docs_path:
        lines.append(f"- **Data Docs:** {md.link(docs_path, directory, text=docs_path)}")
    return "\n".join(lines)


def _rows_section(stacked: pd.DataFrame, names: list[str], what: str = "rows") -> _Section:
    """Rows (conversations, for chat) and their share per split."""
    counts = stacked[SPLIT].value_counts().reindex(names, fill_value=0)
    total = int(counts.sum())
    body = [[md.cell(name), f"{int(n):,}", _percent(n, total)] for name, n in counts.items()]
    body.append(["**total**", f"{total:,}", _percent(total, total)])
    rows = {name: int(n) for name, n in counts.items()} | {"total": total}
    markdown = f"## {what.capitalize()} per split\n\n" + md.table(["split", what, "share"], body)
    return _Section(markdown, {"rows": rows})


def _warnings_section(warnings: list[str]) -> _Section:
    """What the gate passed but a reader should see before training on the data."""
    lines = "\n".join(f"- {md.inline(w)}" for w in warnings)
    return _Section(f"## Warnings\n\n{lines}", {"warnings": list(warnings)})


def _cleaning_section(record: CleaningRecord) -> _Section:
    """The policy, rows dropped per split and reason, and every dropped row (up to a cap)."""
    title = "## Cleaning\n\n"
    summary = {"cleaning": record.summary()}
    policy = ", ".join(f"{k}={v}" for k, v in record.policy.items())
    if not record.active:
        text = f"Off (data.clean: {policy}): the rows are as the source gave them."
        return _Section(title + md.inline(text), summary)
    counts = record.counts()
    body = [
        [
            md.cell(name),
            f"{record.rows_before[name]:,}",
            *(f"{counts[name][reason]:,}" for reason in REASONS),
            f"{record.rows_after[name]:,}",
            f"{record.stripped.get(name, 0):,}",
        ]
        for name in record.rows_before
    ]
    parts = [
        f"Policy: {md.code(policy)}. Rows were dropped before the validation gate, which "
        "ran on what remained; duplicates and leaks use the gate's normalised key.",
        md.table(["split", "rows before", *REASONS, "rows after", "texts stripped"], body),
    ]
    if record.dropped:
        listed = record.dropped[:LISTED_DROPS]
        rows = [
            [
                md.cell(d.split),
                md.cell(d.reason),
                md.MISSING if d.source_row is None else str(d.source_row),
                md.cell(d.text, CELL_CHARS) if d.text else md.MISSING,
                md.cell(d.detail, CELL_CHARS),
            ]
            for d in listed
        ]
        more = len(record.dropped) - len(listed)
        tail = f"\n\n{more:,} more rows are listed in the version's cleaning.json." if more else ""
        parts.append(
            f"Dropped rows ({len(record.dropped):,}):\n\n"
            + md.table(["split", "reason", "source row", "text", "detail"], rows)
            + tail
        )
    else:
        parts.append("No row was dropped.")
    return _Section(title + "\n\n".join(parts), summary)


def _labels_section(stacked: pd.DataFrame, names: list[str], directory: Path) -> _Section:
    """Label counts and shares per split, as a table and a grouped bar chart."""
    counts = _label_counts(stacked, names)
    totals = counts.sum()
    headers = ["label", *names, "all"]
    shown_headers = ["label", *(md.cell(n) for n in names), "all"]
    body = [
        [
            md.cell(label, CELL_CHARS),
            *(f"{int(row[n]):,} ({_percent(row[n], totals[n])})" for n in headers[1:]),
        ]
        for label, row in counts.iterrows()
    ]
    plot = _plot_labels(counts[names], directory / "labels.png")
    labels = {name: {str(k): int(v) for k, v in counts[name].items()} for name in headers[1:]}
    markdown = (
        "## Label balance\n\n"
        f"{len(counts)} labels; each cell is rows (share of the split).\n\n"
        + md.table(shown_headers, body)
        + f"\n\n![Label share per split]({plot.name})"
    )
    return _Section(markdown, {"labels": labels}, [plot])


def _label_counts(stacked: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Rows per label (index) and split (columns) plus an ``all`` column; nulls shown."""
    labels = stacked["label"].map(lambda v: "<null>" if pd.isna(v) else str(v))
    counts = pd.crosstab(labels, stacked[SPLIT]).reindex(columns=names, fill_value=0)
    counts["all"] = counts.sum(axis=1)
    return counts.sort_index()


def _lengths_section(stacked, lengths, names, counter, directory, task="") -> _Section:
    """Min/median/p95/max length per text column and non-empty split; a histogram each."""
    headers = [
        "column",
        "split",
        "chars min",
        "median",
        "p95",
        "max",
        "tokens min",
        "median",
        "p95",
        "max",
    ]
    body, summary, plots = [], {}, []
    for column, frame in lengths.items():
        summary[column] = {}
        for scope in [*names, "all"]:
            rows = frame if scope == "all" else frame[stacked[SPLIT] == scope]
            stats = {unit: _stats(rows[unit]) for unit in ("characters", "tokens")}
            summary[column][scope] = stats
            if rows.empty:
                continue
            body.append(
                [
                    md.cell(column),
                    md.cell(scope),
                    *_stat_cells(stats["characters"]),
                    *_stat_cells(stats["tokens"]),
                ]
            )
        plots.append(
            _plot_lengths(
                column,
                frame,
                stacked[SPLIT],
                names,
                counter,
                directory / f"lengths-{md.slug(column, 'column')}.png",
            )
        )
    images = "\n\n".join(
        f"![Lengths of {p.stem.removeprefix('lengths-')}]({p.name})" for p in plots
    )
    what = f"Characters, and tokens counted as {md.inline(counter.label)}."
    if task == "chat":
        what = (
            "Per conversation: characters of its turns' texts, and tokens of "
            f"{md.inline(counter.framing('chat'))} (counted as {md.inline(counter.label)}), "
            "as the gate's length check counts them."
        )
    if task == "prompts":
        what = (
            "Per prompt: characters, and tokens of "
            f"{md.inline(counter.framing('prompts'))} (counted as {md.inline(counter.label)}), "
            "as the gate's length check counts them against model.max_length. The answers "
            "are generated in training, so their length is set there, not by the data."
        )
    markdown = "## Lengths\n\n" + what + "\n\n" + md.table(headers, body) + "\n\n" + images
    return _Section(markdown, {"lengths": summary}, plots)


def _preference_section(lengths: dict[str, pd.DataFrame], directory: Path) -> _Section:
    """How chosen responses compare in length with rejected ones, row by row."""
    chosen, rejected = lengths["chosen"], lengths["rejected"]
    both = chosen["tokens"].notna() & rejected["tokens"].notna()
    diff = chosen.loc[both, "tokens"] - rejected.loc[both, "tokens"]
    pairs = int(both.sum())
    comparison = {
        "pairs": pairs,
        "chosen_longer": int((diff > 0).sum()),
        "rejected_longer": int((diff < 0).sum()),
        "same_length": int((diff == 0).sum()),
        "median_token_difference": _rounded(diff.median()) if pairs else None,
        "median_chars": {
            "chosen": _rounded(chosen["characters"].median()),
            "rejected": _rounded(rejected["characters"].median()),
        },
        "median_tokens": {
            "chosen": _rounded(chosen["tokens"].median()),
            "rejected": _rounded(rejected["tokens"].median()),
        },
    }
    body = [
        [
            "chosen longer",
            f"{comparison['chosen_longer']:,}",
            _percent(comparison["chosen_longer"], pairs),
        ],
        [
            "rejected longer",
            f"{comparison['rejected_longer']:,}",
            _percent(comparison["rejected_longer"], pairs),
        ],
        [
            "same length",
            f"{comparison['same_length']:,}",
            _percent(comparison["same_length"], pairs),
        ],
    ]
    plot = _plot_pairs(
        chosen["tokens"][both], rejected["tokens"][both], directory / "chosen-vs-rejected.png"
    )
    markdown = (
        "## Chosen vs rejected length\n\n"
        f"Median length: chosen {_fmt(comparison['median_tokens']['chosen'])} tokens / "
        f"{_fmt(comparison['median_chars']['chosen'])} chars, rejected "
        f"{_fmt(comparison['median_tokens']['rejected'])} tokens / "
        f"{_fmt(comparison['median_chars']['rejected'])} chars. A strong lean one way means "
        "a preference model can score well by length alone.\n\n"
        + md.table(["pairs (by tokens)", "rows", "share"], body)
        + f"\n\n![Chosen vs rejected tokens]({plot.name})"
    )
    return _Section(markdown, {"chosen_vs_rejected": comparison}, [plot])


def _vocabulary_section(stacked: pd.DataFrame, texts: list[str]) -> _Section:
    """Distinct lower-cased word tokens in the train split and in all splits."""
    vocab = {"all": len(_vocabulary(stacked, texts))}
    if (stacked[SPLIT] == "train").any():
        vocab = {"train": len(_vocabulary(stacked[stacked[SPLIT] == "train"], texts))} | vocab
    body = [[scope, f"{n:,}"] for scope, n in vocab.items()]
    markdown = (
        "## Vocabulary\n\n"
        "Distinct lower-cased words (runs of letters/digits) across "
        f"{md.inline(', '.join(texts))}.\n\n" + md.table(["splits", "distinct words"], body)
    )
    return _Section(markdown, {"vocabulary": vocab})


def _vocabulary(frame: pd.DataFrame, texts: list[str]) -> set[str]:
    words: set[str] = set()
    for column in texts:
        for value in frame[column]:
            if isinstance(value, str):
                words.update(_WORD.findall(value.lower()))
    return words


def _duplicates_section(stacked: pd.DataFrame, task: str, names: list[str]) -> _Section:
    """Rows repeating an earlier row's normalised key, overall, per split and across splits."""
    keys = example_keys(stacked, task)
    known = keys != ""
    repeats = keys.duplicated(keep="first") & known
    within = pd.DataFrame({SPLIT: stacked[SPLIT], "key": keys}).duplicated(keep="first") & known
    across = (stacked[SPLIT].groupby(keys).transform("nunique") > 1) & known
    total = len(stacked)
    duplicates = {
        "rows": int(repeats.sum()),
        "share": _ratio(repeats.sum(), total),
        "within_split": {n: int(within[stacked[SPLIT] == n].sum()) for n in names},
        "in_more_than_one_split": int(across.sum()),
    }
    body = [["all splits together", f"{duplicates['rows']:,}", _percent(repeats.sum(), total)]]
    for name in names:
        size = int((stacked[SPLIT] == name).sum())
        count = duplicates["within_split"][name]
        body.append([f"within {md.cell(name)}", f"{count:,}", _percent(count, size)])
    body.append(
        ["key in more than one split", f"{int(across.sum()):,}", _percent(across.sum(), total)]
    )
    markdown = (
        "## Duplicates\n\n"
        f"A row is a duplicate when its {_key_words(task)}, case-folded and with whitespace "
        "collapsed, repeats an earlier row's; the first copy is not counted.\n\n"
        + md.table(["scope", "duplicate rows", "share"], body)
    )
    return _Section(markdown, {"duplicates": duplicates})


def _key_words(task: str) -> str:
    if task == "chat":
        return "conversation (every turn's role and text)"
    return "text (plus text_pair, if any)" if task == "classification" else "prompt"


def _ngrams_section(stacked: pd.DataFrame) -> _Section:
    """The n-grams most over-represented in each class, by one-vs-rest chi-squared."""
    labeled = stacked[stacked["label"].notna()]
    docs = _documents(labeled)
    ngrams = _distinctive_ngrams(docs, labeled["label"].astype(str))
    title = "## Distinctive n-grams per class\n\n"
    if not ngrams:
        return _Section(title + "_Needs at least two classes with text._", {"ngrams": {}})
    body = [
        [
            md.cell(label, CELL_CHARS),
            ", ".join(f"{md.cell(g, CELL_CHARS)} ({score:.1f})" for g, score in top) or md.MISSING,
        ]
        for label, top in ngrams.items()
    ]
    summary = {label: [[g, round(s, 3)] for g, s in top] for label, top in ngrams.items()}
    markdown = (
        title + f"Unigrams and bigrams in all splits, top {TOP_NGRAMS} per class by chi-squared "
        "(class vs the rest, counting documents), keeping only those more frequent in the "
        "class than elsewhere. Score in brackets.\n\n" + md.table(["label", "n-grams"], body)
    )
    return _Section(markdown, {"ngrams": summary})


def _documents(frame: pd.DataFrame) -> list[str]:
    """One document per row: text, plus text_pair for sentence-pair datasets."""
    columns = [c for c in ("text", "text_pair") if c in frame.columns]
    return [
        " ".join(v for v in row if isinstance(v, str))
        for row in frame[columns].itertuples(index=False)
    ]


def _distinctive_ngrams(
    docs: list[str], labels: pd.Series, top: int = TOP_NGRAMS
) -> dict[str, list[tuple[str, float]]]:
    """Per class, the top n-grams by chi-squared among those over-represented in the class."""
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.feature_selection import chi2

    classes = sorted(labels.unique())
    if len(classes) < 2:
        return {}
    vectorizer = CountVectorizer(ngram_range=(1, 2), binary=True, lowercase=True)
    try:
        matrix = vectorizer.fit_transform(docs)
    except ValueError:  # no word of two characters or more anywhere
        return {}
    vocab = vectorizer.get_feature_names_out()
    totals = np.asarray(matrix.sum(axis=0)).ravel()
    out = {}
    for label in classes:
        in_class = (labels == label).to_numpy()
        scores, _ = chi2(matrix, in_class)
        observed = np.asarray(matrix[in_class].sum(axis=0)).ravel()
        # chi2 is symmetric: keep n-grams seen in the class more often than chance predicts.
        candidates = np.flatnonzero((observed > totals * in_class.mean()) & (scores > 0))
        ranked = candidates[np.lexsort((vocab[candidates], -scores[candidates]))][:top]
        out[label] = [(str(vocab[i]), float(scores[i])) for i in ranked]
    return out


def _examples_section(stacked: pd.DataFrame, task: str, seed: int) -> _Section:
    """A seeded sample: a few examples per class, or a few rows for other tasks."""
    if task == "classification":
        columns = [SPLIT, "label", *text_columns(task, stacked)]
        picked = _sample_per_class(stacked, seed)
        intro = f"Up to {EXAMPLES_PER_CLASS} per class"
    else:
        columns = [SPLIT, *columns_for(task, stacked)]
        picked = _sample(stacked, EXAMPLE_ROWS, seed)
        intro = f"{len(picked)} rows"
    body = [[md.cell(row[c], CELL_CHARS) for c in columns] for _, row in picked.iterrows()]
    markdown = (
        "## Examples\n\n"
        f"{intro}, drawn with seed {seed}; texts cut at {CELL_CHARS} characters.\n\n"
        + md.table([md.cell(c) for c in columns], body)
    )
    return _Section(markdown, {"examples_shown": len(picked)})


def _turns_section(stacked: pd.DataFrame, names: list[str], counter, directory) -> _Section:
    """Turns per conversation per split, system turns, and tokens per user/assistant turn."""
    parsed = stacked[chat.COLUMN].map(chat.parse)
    turns = parsed.map(lambda m: float(len(m)) if m is not None else math.nan)
    system = parsed.map(lambda m: bool(m) and m[0]["role"] == "system")
    body, summary = [], {}
    for scope in [*names, "all"]:
        rows = turns if scope == "all" else turns[stacked[SPLIT] == scope]
        stats = _stats(rows)
        in_scope = system if scope == "all" else system[stacked[SPLIT] == scope]
        share = _ratio(in_scope.sum(), rows.notna().sum())
        summary[scope] = {**stats, "with_system_turn": share}
        if rows.notna().any():
            body.append([md.cell(scope), *_stat_cells(stats), _percent(in_scope.sum(), len(rows))])
    per_role = {}
    for role in ("user", "assistant"):
        texts = [m["content"] for ms in parsed.dropna() for m in ms if m["role"] == role]
        per_role[role] = _stats(pd.Series([counter.count(t) for t in texts], dtype="float64"))
    role_rows = [[md.cell(role), *_stat_cells(stats)] for role, stats in per_role.items()]
    plot = _plot_turns(turns, stacked[SPLIT], names, directory / "turns.png")
    markdown = (
        "## Turns\n\n"
        "Turns per conversation (a system turn counts as one), and the share of "
        "conversations that open with a system turn.\n\n"
        + md.table(["split", "turns min", "median", "p95", "max", "with a system turn"], body)
        + "\n\nTokens per turn (the turn's text alone, without a template), counted as "
        + f"{md.inline(counter.label)}.\n\n"
        + md.table(["role", "tokens min", "median", "p95", "max"], role_rows)
        + f"\n\n![Turns per conversation]({plot.name})"
    )
    return _Section(markdown, {"turns": summary, "turn_tokens": per_role}, [plot])


def _conversations_section(stacked: pd.DataFrame, seed: int) -> _Section:
    """A seeded sample of whole conversations, turn by turn."""
    well_formed = stacked[stacked[chat.COLUMN].map(lambda v: chat.parse(v) is not None)]
    picked = _sample(well_formed, EXAMPLE_CONVERSATIONS, seed)
    parts = []
    for number, (_, row) in enumerate(picked.iterrows(), 1):
        lines = [
            f"- **{md.inline(m['role'])}:** {md.inline(md.short(m['content'], TURN_CHARS))}"
            for m in chat.parse(row[chat.COLUMN])
        ]
        parts.append(
            f"### Conversation {number} ({md.inline(row[SPLIT])} split)\n\n" + "\n".join(lines)
        )
    body = "\n\n".join(parts) if parts else "_No well-formed conversation to show._"
    markdown = (
        "## Examples\n\n"
        f"{len(picked)} conversations drawn with seed {seed}; turns cut at {TURN_CHARS} "
        "characters.\n\n" + body
    )
    return _Section(markdown, {"examples_shown": len(picked)})


def _sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return frame.sample(n=min(n, len(frame)), random_state=seed).sort_index()


def _sample_per_class(stacked: pd.DataFrame, seed: int) -> pd.DataFrame:
    labels = stacked["label"].map(lambda v: "<null>" if pd.isna(v) else str(v))
    parts = [_sample(group, EXAMPLES_PER_CLASS, seed) for _, group in stacked.groupby(labels)]
    return pd.concat(parts) if parts else stacked.iloc[0:0]


# --- plots --------------------------------------------------------------------------


def _plot_labels(counts: pd.DataFrame, path: Path) -> Path:
    """Grouped bars: each label's share of each split's rows."""
    import numpy as np

    shares = counts / counts.sum().replace(0, 1) * 100
    fig = md.figure(min(16.0, max(6.0, 0.5 * len(shares) * len(shares.columns))), 4.5)
    ax = fig.subplots()
    x = np.arange(len(shares))
    width = 0.8 / max(1, len(shares.columns))
    for i, split in enumerate(shares.columns):
        ax.bar(
            x + (i - (len(shares.columns) - 1) / 2) * width,
            shares[split],
            width,
            label=f"{split} (n={int(counts[split].sum()):,})",
        )
    crowded = len(shares) > 6
    ax.set_xticks(
        x,
        [md.short(str(label), 20) for label in shares.index],
        rotation=30 if crowded else 0,
        ha="right" if crowded else "center",
    )
    ax.set_ylabel("% of split's rows")
    ax.set_title("Label balance per split")
    # Headroom so the one-row legend sits above the bars, not on them.
    ax.set_ylim(0, max(float(shares.to_numpy().max(initial=0)), 1.0) * 1.25)
    ax.legend(loc="upper center", ncols=len(shares.columns), frameon=False)
    return md.save_figure(fig, path)


def _plot_lengths(column, frame, splits, names, counter, path: Path) -> Path:
    """Side-by-side histograms of characters and tokens, stacked by split."""
    fig = md.figure(10.0, 3.8)
    axes = fig.subplots(1, 2)
    for ax, unit in zip(axes, ("characters", "tokens"), strict=True):
        groups = [frame.loc[splits == n, unit].dropna() for n in names]
        kept = [(n, g) for n, g in zip(names, groups, strict=True) if len(g)]
        if kept:
            ax.hist([g for _, g in kept], bins=30, stacked=True, label=[n for n, _ in kept])
            ax.legend()
        ax.set_xlabel(unit if unit == "characters" else md.short(counter.label, 48))
        ax.set_ylabel("rows")
    fig.suptitle(f"Length of '{column}'")
    return md.save_figure(fig, path)


def _plot_turns(turns: pd.Series, splits: pd.Series, names: list[str], path: Path) -> Path:
    """Bars of conversations per number of turns, stacked by split."""
    fig = md.figure(7.0, 3.8)
    ax = fig.subplots()
    groups = [(n, turns[splits == n].dropna()) for n in names]
    kept = [(n, g) for n, g in groups if len(g)]
    if kept:
        low, high = int(min(g.min() for _, g in kept)), int(max(g.max() for _, g in kept))
        bins = [b - 0.5 for b in range(low, high + 2)]
        ax.hist([g for _, g in kept], bins=bins, stacked=True, label=[n for n, _ in kept])
        ax.set_xticks(range(low, high + 1))
        ax.legend()
    ax.set_xlabel("turns per conversation")
    ax.set_ylabel("conversations")
    ax.set_title("Turns per conversation")
    return md.save_figure(fig, path)


def _plot_pairs(chosen: pd.Series, rejected: pd.Series, path: Path) -> Path:
    """Scatter of chosen vs rejected token length with the equal-length diagonal."""
    fig = md.figure(5.0, 5.0)
    ax = fig.subplots()
    ax.scatter(rejected, chosen, s=12, alpha=0.5)
    top = max([chosen.max(), rejected.max(), 1.0]) if len(chosen) else 1.0
    ax.plot([0, top], [0, top], color="grey", linestyle="--", label="same length")
    ax.set_xlabel("rejected (tokens)")
    ax.set_ylabel("chosen (tokens)")
    ax.set_title("Chosen vs rejected length per pair")
    ax.legend()
    return md.save_figure(fig, path)


# --- formatting ---------------------------------------------------------------------


def _stats(values: pd.Series) -> dict:
    """min, median, p95 and max of the non-null values; None when there are none."""
    values = values.dropna()
    if values.empty:
        return {"min": None, "median": None, "p95": None, "max": None}
    return {
        "min": _rounded(values.min()),
        "median": _rounded(values.median()),
        "p95": _rounded(values.quantile(0.95)),
        "max": _rounded(values.max()),
    }


def _stat_cells(stats: dict) -> list[str]:
    return [_fmt(stats[k]) for k in ("min", "median", "p95", "max")]


def _rounded(value) -> int | float | None:
    """A plain int when whole, else a float rounded to one decimal; None for NaN."""
    if value is None or pd.isna(value):
        return None
    value = round(float(value), 1)
    return int(value) if value.is_integer() else value


def _fmt(value) -> str:
    return md.MISSING if value is None else f"{value:,}"


def _ratio(part, whole) -> float:
    return round(float(part) / whole, 4) if whole else 0.0


def _percent(part, whole) -> str:
    return f"{float(part) / whole:.1%}" if whole else md.MISSING
