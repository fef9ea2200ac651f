"""How ``vigocli swarm filecast`` shows things to people. Pure: JSON in, lines out.

The live status view (``status --watch``) redraws the lines of ``status_lines`` in
place: ``redraw`` moves the cursor up over what it drew last and clears to the end of
the screen, so it needs each drawn line to fit the terminal (lines are cut to the
width), or the count of lines to move up would be wrong.
"""

from __future__ import annotations

from typing import Any

from .vigocli_admin import when

BAR_CELLS = 24
SHORT_HASH = 12
_STATE_ORDER = ("materialized", "complete", "partial", "missing", "error", "unknown")


def human_bytes(n: object) -> str:
    if not isinstance(n, int) or isinstance(n, bool):
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def short(blob: object) -> str:
    return str(blob)[:SHORT_HASH] if blob else "-"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def bar(have: int, total: int, *, unicode: bool) -> str:
    """``[██████░░░░]`` (or ``[####----]`` where the terminal cannot show blocks)."""
    full, empty = ("█", "░") if unicode else ("#", "-")
    filled = BAR_CELLS if total <= 0 else min(BAR_CELLS, have * BAR_CELLS // total)
    return "[" + full * filled + empty * (BAR_CELLS - filled) + "]"


# ------------------------------------------------------------------- distribute


def distributed_lines(answer: dict[str, Any], source: str) -> list[str]:
    record, blob = answer["record"], answer["blob"]
    target = record["targets"][0] if record["targets"] else "?"
    chunks = plural(blob["chunks"], "chunk")
    lines = [
        f"distributed {source} -> {target}",
        f"  blob       {blob['sha256']}",
        f"  size       {_size_text(blob['size_bytes'])}, {chunks} of "
        f"{human_bytes(blob['chunk_bytes'])}",
        f"  record     {record['key']} (retention {retention_text(record['retention'])})",
    ]
    replaced = answer.get("replaced")
    if replaced:
        lines.append(f"  replaces   blob {replaced['blob']}")
    lines.append("watch it arrive: vigocli swarm filecast status --watch")
    return lines


def _size_text(n: int) -> str:
    return human_bytes(n) if n < 1024 else f"{human_bytes(n)} ({n} bytes)"


def retention_text(retention: dict[str, Any]) -> str:
    kind = str(retention.get("kind", "?"))
    if kind == "expires_at":
        return f"expires {when(retention.get('expires_at_unix'))}"
    return kind


# ------------------------------------------------------------------------- list


def list_rows(answer: dict[str, Any]) -> list[list[str]]:
    return [
        [
            str(r["target"]),
            short(r["blob"]),
            human_bytes(r["size_bytes"]),
            retention_text(r["retention"]) + ("" if r["live"] else " (expired)"),
            r["hlc_time"],
            source_text(r.get("source")),
        ]
        for r in answer["records"]
    ]


LIST_HEADERS = ["TARGET", "BLOB", "SIZE", "RETENTION", "DISTRIBUTED", "SOURCE"]


def source_text(source: object) -> str:
    """``upload``, or ``sidecar HOST:/path/NAME.swarm`` for a seeder's sidecar."""
    if not isinstance(source, dict):
        return "-"
    if source.get("kind") != "sidecar":
        return str(source.get("kind", "-"))
    host = source.get("hostname") or source.get("envoy") or "?"
    return f"sidecar {host}:{source.get('sidecar')}"


def revocation_rows(answer: dict[str, Any]) -> list[list[str]]:
    return [[str(r["target"] or "?"), r["key"], r["hlc_time"]] for r in answer["revocations"]]


REVOCATION_HEADERS = ["TARGET", "KEY", "REVOKED"]


# ----------------------------------------------------------------------- status


def _counts_text(counts: dict[str, int]) -> str:
    parts = [f"{counts[s]} {s}" for s in _STATE_ORDER if counts.get(s)]
    return ", ".join(parts) or "nothing yet"


def _envoy_line(envoy: dict[str, Any], name_width: int, unicode: bool) -> str:
    state = envoy["state"]
    name = f"  {envoy['hostname']:<{name_width}}  {state:<12}  "
    if state == "unknown":
        if envoy["last_checkin"] is None:
            return name + "(has not checked in yet)"
        return name + "(has not reported this blob yet)"
    have, total = envoy["have_chunks"], envoy["total_chunks"]
    line = name + f"{bar(have, total, unicode=unicode)} {have}/{total}"
    if envoy.get("error"):
        line += f"  {envoy['error']}"
    return line


def status_lines(view: dict[str, Any], *, unicode: bool = True) -> list[str]:
    """The status view as text: one block per live record, one line per envoy."""
    totals = view["totals"]
    if not view["records"]:
        return ["no live filecast records (distribute one: vigocli swarm filecast distribute)"]
    if not totals["envoys"]:
        return [f"{plural(totals['records'], 'live record')}, but no active envoys to deliver to"]
    lines: list[str] = []
    for record in view["records"]:
        counts = record["counts"]
        envoys = record["envoys"]
        done = counts.get("materialized", 0)
        source = record.get("source") or {}
        origin = f"  from {source_text(source)}" if source.get("kind") == "sidecar" else ""
        lines.append(
            f"{record['target']}  blob {short(record['blob'])}  "
            f"{human_bytes(record['size_bytes'])}  {done}/{len(envoys)} materialized{origin}"
        )
        width = max(len(e["hostname"]) for e in envoys)
        lines += [_envoy_line(e, width, unicode) for e in envoys]
    summary = _counts_text(totals["counts"])
    state = "done" if totals["done"] else "in progress"
    lines.append(
        f"{state}: {plural(totals['records'], 'record')} x {plural(totals['envoys'], 'envoy')}"
        f" = {totals['pairs']}: {summary}"
    )
    return lines


def fit(lines: list[str], width: int) -> list[str]:
    """Cut each line to the terminal width (so a redraw knows how many rows it drew)."""
    width = max(width, 20)
    return [line if len(line) < width else line[: width - 4] + "..." for line in lines]


def redraw(lines: list[str], previous_rows: int) -> str:
    """The ANSI text that replaces the last ``previous_rows`` rows with ``lines``."""
    up = f"\x1b[{previous_rows}F" if previous_rows else ""
    return up + "\x1b[J" + "".join(line + "\n" for line in lines)
