"""The runner's pure logic: a check's result line read from its output, the summary table, the
exit status. No torch: unit-tested on any machine (tests/test_gpu_check.py)."""

from __future__ import annotations

import json

from benchmarks.gpu_check.common import RESULT_MARKER, first_line


def parse_result(name: str, output: str, returncode: int | None, timed_out: bool, timeout_s: float, seconds: float) -> dict:
    """The row of check `name` from its combined output: its last result line, else why there is none.
    A check passes only when it said so and exited 0."""
    row = {"check": name, "ok": False, "figure": "", "details": {}, "seconds": round(seconds, 1), "returncode": returncode}
    reported = None
    for line in output.splitlines():
        if line.startswith(RESULT_MARKER):
            try:
                reported = json.loads(line[len(RESULT_MARKER):])
            except json.JSONDecodeError:
                reported = None
    if timed_out:
        row["figure"] = f"timed out after {timeout_s:.0f} s"
        return row
    if not isinstance(reported, dict) or "ok" not in reported:
        last = first_line("\n".join(output.strip().splitlines()[-1:])) if output.strip() else "no output"
        row["figure"] = f"no result (exit code {returncode}): {last}"
        return row
    row.update(ok=bool(reported["ok"]) and returncode == 0, figure=str(reported.get("figure", "")), details=reported.get("details") or {})
    if reported["ok"] and returncode != 0:
        row["figure"] += f" (but exit code {returncode})"
    return row


def table(rows: list[dict]) -> str:
    """A Markdown table: check, result, key figure, seconds."""
    lines = ["| check | result | key figure | seconds |", "|---|---|---|---|"]
    for row in rows:
        figure = str(row["figure"]).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {row['check']} | {'pass' if row['ok'] else 'FAIL'} | {figure} | {row['seconds']:.1f} |")
    return "\n".join(lines)


def exit_code(rows: list[dict], expected: int) -> int:
    """0 when every expected check ran and passed, else 1."""
    return 0 if len(rows) == expected and all(row["ok"] for row in rows) else 1


def tail(text: str, limit: int) -> str:
    """The last `limit` characters of `text`, marked when cut."""
    if len(text) <= limit:
        return text
    return f"[... {len(text) - limit} characters cut ...]\n" + text[-limit:]
