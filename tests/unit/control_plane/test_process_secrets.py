"""process_secrets in a process of its own (it changes the process it runs in): the tokens leave the
environment, what /proc shows of it and any child's, the process is no longer dumpable, and a replica
can still be given them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PROBE = r"""
import json, os, subprocess, sys
from control_plane.process_secrets import dumpable, withdraw_secrets, withheld
was_dumpable = dumpable()
removed = withdraw_secrets()
shown = open(f"/proc/{os.getpid()}/environ", "rb").read() if sys.platform.startswith("linux") else b""
child = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.environ))"], capture_output=True)
print(json.dumps({
    "removed": removed, "was_dumpable": was_dumpable, "dumpable": dumpable(),
    "in_proc": [token for token in sys.argv[1:] if token.encode() in shown],
    "in_child": [token for token in sys.argv[1:] if token.encode() in child.stdout],
    "in_os_environ": [name for name in removed if name in os.environ],
    "kept": os.environ.get("KEEP_ME"), "withheld": sorted(withheld()),
}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux's")
def test_the_tokens_leave_the_environment_and_proc_and_the_process_is_not_dumpable() -> None:
    tokens = {"AETHER_ADMIN_TOKEN": "admin-0123456789", "AETHER_READONLY_TOKEN": "reader-0123456789"}
    db_url = "postgresql://aether:db-password-0123@db/aether"
    env = {
        **os.environ,
        **tokens,
        "AETHER_TOKEN": "caller-0123456789",
        "AETHER_DB_URL": db_url,
        "KEEP_ME": "yes",
    }
    env.pop("AETHER_REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *tokens.values(), "caller-0123456789", "db-password-0123"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert report["removed"] == [
        "AETHER_ADMIN_TOKEN",
        "AETHER_DB_URL",
        "AETHER_READONLY_TOKEN",
        "AETHER_TOKEN",
    ]
    assert report["in_proc"] == [] and report["in_child"] == [] and report["in_os_environ"] == []
    assert report["was_dumpable"] and not report["dumpable"]
    assert report["kept"] == "yes"
    assert report["withheld"] == report["removed"]
