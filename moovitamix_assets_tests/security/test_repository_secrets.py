"""No secret is committed: every file git tracks (or would add) is scanned for credentials.

A URL with a password is a leak unless the password is an obvious placeholder (``pass``,
``password``, ``***``, ``...``, ``{SECRET}``, ``${VAR}``, ``<password>``): docs and tests show URL
shapes, never working credentials. Private keys, cloud access keys and Slack webhook URLs are leaks
wherever they appear.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_BYTES = 2_000_000

URL_WITH_PASSWORD = re.compile(
    r"\b[a-zA-Z][a-zA-Z0-9+.-]*://(?P<user>[^\s:/@'\"`]+):(?P<password>[^\s@/'\"`]+)@"
)
PLACEHOLDER_PASSWORDS = frozenset({"pass", "password", "pw", "secret", "changeme-never"})
TEMPLATED = re.compile(
    r"^(\*+|\.\.\.|\{[^}]*\}|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|<[^>]+>|%\([a-z_]+\)s|\{\{.*\}\})$"
)
ALWAYS_SECRET = {
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "Slack webhook": re.compile(r"hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
}
# psql's password literal in SQL scripts: CREATE/ALTER ROLE ... PASSWORD '...'.
SQL_PASSWORD = re.compile(r"\bPASSWORD\s+'[^']+'", re.IGNORECASE)


def is_placeholder(password: str) -> bool:
    return password.lower() in PLACEHOLDER_PASSWORDS or bool(TEMPLATED.match(password))


def find_secrets(text: str, suffix: str = "") -> list[str]:
    """Descriptions of what looks like a committed secret in ``text``."""
    found = [
        f"URL with password for user {m['user']!r}"
        for m in URL_WITH_PASSWORD.finditer(text)
        if not is_placeholder(m["password"])
    ]
    found += [name for name, pattern in ALWAYS_SECRET.items() if pattern.search(text)]
    if suffix == ".sql":
        found += ["SQL password literal" for _ in SQL_PASSWORD.finditer(text)]
    return found


def repository_files() -> list[Path]:
    """Tracked files plus untracked ones git would add (not ignored): what could be committed."""
    proc = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    )
    names = sorted({name for name in proc.stdout.decode().split("\0") if name})
    return [REPO / name for name in names if (REPO / name).is_file()]


# The leaking examples are assembled at run time, so this file does not trip its own scan.
AT = "@"
LEAKS = [
    "postgresql://moovitamix:hunter2" + AT + "db.internal:5432/moovitamix",
    "MOOVITAMIX_DATABASE_URL='postgresql+psycopg2://u:S3cr3t-x" + AT + "host/db'",
    "https://bot:tok_9f8e7d" + AT + "hooks.example/path",
    "-----BEGIN OPENSSH " + "PRIVATE KEY-----",
    "https://hooks.slack.com/services/" + "T0001/B0002/abcdefABCDEF1234",
    "AKIA" + "ABCDEFGHIJKLMNOP",
]
PLACEHOLDERS = [
    "postgresql+psycopg2://user:password@host:port/database",
    "postgresql+psycopg2://user:pass@host:5432/moovitamix",
    "postgresql+psycopg2://moovitamix:...@db.internal:5432/moovitamix",
    "postgresql://me:***@127.0.0.1:1/warehouse",
    'f"postgresql://u:{SECRET}@db.example/warehouse"',
    "postgresql://app:${PGPASSWORD}@db/app",
    "postgresql://app:<password>@db/app",
    "postgresql+psycopg2://postgres@/moovitamix?host=/tmp",
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, 1) for t in LEAKS] + [(t, 0) for t in PLACEHOLDERS]
)
def test_the_detector_tells_secrets_from_placeholders(text: str, expected: int) -> None:
    assert len(find_secrets(text)) == expected, text


def test_sql_scripts_must_not_set_passwords() -> None:
    assert find_secrets("ALTER ROLE x PASSWORD " + "'hunter2';", ".sql") == ["SQL password literal"]
    assert find_secrets("-- psql -c '\\password moovitamix_platform'", ".sql") == []


def test_the_repository_holds_no_secret() -> None:
    files = repository_files()
    assert any(path.name == "least_privilege.sql" for path in files)
    assert any(path.name == "dagster.yaml" for path in files)
    leaks = {}
    for path in files:
        data = path.read_bytes()[:MAX_BYTES]
        if b"\0" in data[:8192]:  # binary
            continue
        found = find_secrets(data.decode("utf-8", errors="replace"), path.suffix)
        if found:
            leaks[str(path.relative_to(REPO))] = found
    assert leaks == {}
