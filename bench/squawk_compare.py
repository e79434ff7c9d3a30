"""Run opsagent's lint and Squawk over the same example migrations; print a markdown table.

Usage: ``python bench/squawk_compare.py [--update-doc docs/LINT.md]``.  Squawk
comes from ``pip install squawk-cli`` (a native binary in the wheel).  Each
example is written to its own file in a temporary folder; transactional ones
are given to Squawk with ``--assume-in-transaction`` so both tools see the
same execution context, and both lint offline (text only): opsagent's live
sizing (``inv lint --host``) is a separate column of the doc, not measured here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opsagent.migrate.lint import RULES, lint_sql

# Squawk rules that fire on almost every statement, or are about style rather than a hazard.
SQUAWK_GENERIC = {"require-lock-timeout", "require-statement-timeout", "prefer-robust-stmts"}
SQUAWK_STYLE = {
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-text-field",
    "prefer-identity",
    "prefer-timestamptz",
    "prefer-timestamp-tz",
    "ban-char-field",
}
PG_VERSION = "15.0"
MARKS = {
    "compare": ("<!-- squawk-compare:start -->", "<!-- squawk-compare:end -->"),
    "rules": ("<!-- lint-rules:start -->", "<!-- lint-rules:end -->"),
}


@dataclasses.dataclass(frozen=True)
class Example:
    hazard: str
    expected: str | None  # the opsagent rule id meant to catch it (None: a hazard opsagent has no rule for)
    sql: str
    transactional: bool = True


EXAMPLES = [
    Example("drop a table", "drop-table", "DROP TABLE users;"),
    Example("drop a column", "drop-column", "ALTER TABLE users DROP COLUMN legacy;"),
    Example("drop a schema", "drop-schema", "DROP SCHEMA billing CASCADE;"),
    Example("drop a type", "drop-type", "DROP TYPE mood;"),
    Example("drop a view", "drop-view", "DROP VIEW active_users;"),
    Example("drop a function", "drop-function", "DROP FUNCTION touch();"),
    Example("drop a database", "drop-database", "DROP DATABASE old_app;", transactional=False),
    Example("truncate", "truncate", "TRUNCATE audit_log;"),
    Example("DELETE without WHERE", "delete-without-where", "DELETE FROM sessions;"),
    Example("UPDATE without WHERE", "update-without-where", "UPDATE users SET active = true;"),
    Example("narrowing type change", "alter-column-type", "ALTER TABLE users ALTER COLUMN name TYPE varchar(20);"),
    Example("type change (rewrite)", "alter-column-type", "ALTER TABLE users ALTER COLUMN id TYPE bigint;"),
    Example(
        "ADD COLUMN NOT NULL, no default",
        "add-column-not-null-without-default",
        "ALTER TABLE users ADD COLUMN plan text NOT NULL;",
    ),
    Example(
        "CREATE INDEX on a live table", "create-index-not-concurrently", "CREATE INDEX users_email ON users (email);"
    ),
    Example(
        "ADD FOREIGN KEY (validating)",
        "add-fk-not-valid",
        "ALTER TABLE orders ADD CONSTRAINT orders_user FOREIGN KEY (user_id) REFERENCES users (id);",
    ),
    Example(
        "ADD COLUMN ... REFERENCES",
        "add-fk-not-valid",
        "ALTER TABLE orders ADD COLUMN user_id bigint REFERENCES users (id);",
    ),
    Example(
        "ADD CHECK (validating)",
        "add-check-not-valid",
        "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total >= 0);",
    ),
    Example("SET NOT NULL", "set-not-null", "ALTER TABLE users ALTER COLUMN email SET NOT NULL;"),
    Example(
        "ADD COLUMN volatile default",
        "add-column-volatile-default",
        "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();",
    ),
    Example(
        "ADD COLUMN stable default (safe, PG 11+)",
        None,
        "ALTER TABLE users ADD COLUMN created_at timestamptz DEFAULT now();",
    ),
    Example("ADD COLUMN bigserial", "add-column-volatile-default", "ALTER TABLE users ADD COLUMN seq bigserial;"),
    Example(
        "ADD UNIQUE constraint",
        "add-unique-constraint",
        "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);",
    ),
    Example("ADD PRIMARY KEY", "add-primary-key", "ALTER TABLE users ADD PRIMARY KEY (id);"),
    Example("SET TABLESPACE (rewrite)", "table-rewrite", "ALTER TABLE users SET TABLESPACE fast;"),
    Example("REINDEX", "reindex-not-concurrently", "REINDEX TABLE users;", transactional=False),
    Example("VACUUM FULL", "vacuum-full", "VACUUM FULL users;", transactional=False),
    Example("CLUSTER", "cluster", "CLUSTER users USING users_pkey;"),
    Example("LOCK TABLE", "lock-table", "LOCK TABLE users IN ACCESS EXCLUSIVE MODE;"),
    Example(
        "DROP INDEX (not concurrently)", "drop-index-not-concurrently", "DROP INDEX users_email;", transactional=False
    ),
    Example(
        "CONCURRENTLY in a transaction",
        "non-transactional-in-transaction",
        "CREATE INDEX CONCURRENTLY users_email ON users (email);",
    ),
    Example(
        "CONCURRENTLY in BEGIN/COMMIT",
        "non-transactional-in-transaction",
        "BEGIN;\nCREATE INDEX CONCURRENTLY users_email ON users (email);\nCOMMIT;",
        transactional=False,
    ),
    Example("VACUUM in a transaction", "non-transactional-in-transaction", "VACUUM users;"),
    Example("ALTER SYSTEM in a transaction", "non-transactional-in-transaction", "ALTER SYSTEM SET work_mem = '64MB';"),
    Example("COMMIT in a transactional file", "transaction-control", "UPDATE users SET a = 1 WHERE id = 1;\nCOMMIT;"),
    Example(
        "lock_timeout disabled", "no-lock-timeout", "SET lock_timeout = 0;\nALTER TABLE users ADD COLUMN note text;"
    ),
    Example("rename a column", "rename-column", "ALTER TABLE users RENAME COLUMN name TO full_name;"),
    Example("rename a table", "rename-table", "ALTER TABLE users RENAME TO customers;"),
    # hazards opsagent has no rule for (Squawk's own ground)
    Example("DROP NOT NULL", None, "ALTER TABLE users ALTER COLUMN email DROP NOT NULL;"),
    Example("CREATE DOMAIN with CHECK", None, "CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%');"),
    Example(
        "new table with char(n)/int/timestamp",
        None,
        "CREATE TABLE t (id serial PRIMARY KEY, code char(3), at timestamp);",
    ),
    Example(
        "safe: CREATE INDEX CONCURRENTLY",
        None,
        "CREATE INDEX CONCURRENTLY users_email ON users (email);",
        transactional=False,
    ),
    Example(
        "safe: FK NOT VALID then VALIDATE",
        None,
        "ALTER TABLE orders ADD CONSTRAINT orders_user FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;",
    ),
    Example(
        "safe: function body with DROP TABLE",
        None,
        "CREATE OR REPLACE FUNCTION purge() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DROP TABLE users; END $$;",
    ),
]


def squawk_binary() -> str | None:
    found = shutil.which("squawk")
    if found:
        return found
    candidate = Path(sys.executable).parent / "squawk"
    return str(candidate) if candidate.exists() else None


def squawk_version(binary: str) -> str:
    return subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout.strip()


def run_squawk(binary: str, path: Path, transactional: bool) -> list[str]:
    argv = [binary, "--reporter", "json", f"--pg-version={PG_VERSION}"]
    if transactional:
        argv.append("--assume-in-transaction")
    result = subprocess.run([*argv, str(path)], capture_output=True, text=True, check=False)
    if result.returncode not in (0, 1) or not result.stdout.strip().startswith("["):
        raise RuntimeError(f"squawk failed on {path.name}: {result.stderr.strip() or result.stdout.strip()}")
    return list(dict.fromkeys(entry["rule_name"] for entry in json.loads(result.stdout)))


def opsagent_rules(example: Example) -> list[str]:
    findings = lint_sql(example.sql, "example.sql", transactional=example.transactional)
    shown = [f for f in findings if f.rule != "lock-timeout"]  # the info that names the tool's default lock_timeout
    return [f"{f.rule} ({f.severity})" for f in dict((f.rule, f) for f in shown).values()]


def verdict(ours: bool, theirs: bool) -> str:
    return {(True, True): "both", (True, False): "opsagent only", (False, True): "Squawk only"}.get(
        (ours, theirs), "neither"
    )


def build_table(binary: str | None) -> tuple[str, dict[str, int]]:
    rows = ["| hazard | example | opsagent (offline) | Squawk | who catches it |", "|---|---|---|---|---|"]
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="squawk-compare-") as tmp:
        for index, example in enumerate(EXAMPLES, 1):
            path = Path(tmp) / f"{index:02d}_{re.sub(r'[^a-z0-9]+', '_', example.hazard.lower()).strip('_')}.sql"
            path.write_text(example.sql + "\n")
            ours = opsagent_rules(example)
            theirs = run_squawk(binary, path, example.transactional) if binary else []
            hazard_rules = [r for r in theirs if r not in SQUAWK_GENERIC | SQUAWK_STYLE]
            if example.expected == "no-lock-timeout":
                hazard_rules = [r for r in theirs if r == "require-lock-timeout"]
            style = [r for r in theirs if r in SQUAWK_STYLE]
            caught = (
                bool([r for r in ours if not r.startswith("lock-timeout")])
                if example.expected is None
                else any(r.startswith(example.expected + " ") for r in ours)
            )
            safe = example.hazard.startswith("safe:") or "(safe" in example.hazard
            who = (
                ("correctly silent: " + verdict(not caught, not hazard_rules))
                if safe
                else verdict(caught, bool(hazard_rules))
            )
            if who == "neither" and style:
                who = "Squawk only (style)"
            counts[who] = counts.get(who, 0) + 1
            squawk_cell = ", ".join(hazard_rules) or "—"
            if style:
                squawk_cell += f" (style: {', '.join(style)})"
            sql = example.sql.replace("\n", " ").replace("|", "\\|")
            rows.append(
                f"| {example.hazard} | `{sql}` | {', '.join(ours) or '—'} "
                f"| {squawk_cell if binary else 'not run'} | {who} |"
            )
    return "\n".join(rows), counts


def render(binary: str | None) -> str:
    table, counts = build_table(binary)
    version = squawk_version(binary) if binary else "Squawk not installed (pip install squawk-cli)"
    summary = ", ".join(f"{who}: {n}" for who, n in sorted(counts.items()))
    return (
        f"Generated by `python bench/squawk_compare.py` with {version}, `--pg-version={PG_VERSION}`, "
        f"`--assume-in-transaction` for transactional examples.\n"
        f"Squawk's `require-lock-timeout`, `require-statement-timeout` and `prefer-robust-stmts` fire on nearly every "
        f"example and are only counted for the lock_timeout row.\n\n{table}\n\nTotals: {summary}.\n"
    )


def rules_reference() -> str:
    """The rule reference table of docs/LINT.md, from ``opsagent.migrate.lint.RULES``."""
    escalation = {"large": "error on a large table", "rows": "error when the table holds rows", None: "—"}
    rows = ["| rule | category | default | with `--host` | what | fix |", "|---|---|---|---|---|---|"]
    for rule in RULES.values():
        live = escalation[rule.escalation]
        if rule.escalation == "large" and rule.category == "blocking":
            live += "; info on a small one"
        rows.append(f"| `{rule.id}` | {rule.category} | {rule.severity} | {live} | {rule.what} | {rule.fix} |")
    return "\n".join(rows) + "\n"


def update_doc(doc: Path, blocks: dict[str, str]) -> None:
    content = doc.read_text()
    for name, text in blocks.items():
        start_mark, end_mark = MARKS[name]
        start, end = content.index(start_mark) + len(start_mark), content.index(end_mark)
        content = content[:start] + "\n" + text + content[end:]
    doc.write_text(content)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--update-doc", type=Path, help="replace the table between the squawk-compare markers of this file"
    )
    args = parser.parse_args(argv)
    binary = squawk_binary()
    text = render(binary)
    if args.update_doc:
        update_doc(args.update_doc, {"compare": text, "rules": rules_reference()})
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
