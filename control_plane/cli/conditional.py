"""Read, change, write conditionally: how ``aetherctl retrain configure`` and ``monitor configure`` change
only the flags given although their RPCs replace the whole config (and ``deploy canary start`` lays its
policy flags over the deployment's policy, StartCanary replacing the whole policy too).

Each reads the stored config, lays its flags over it and sends the whole config back with the revision
it read (``expected_revision``). Sent unconditionally, two commands at once both exited 0 and printed
their own result while the later one silently undid the earlier's change (an operator's ``--disable``
by a colleague's ``--cooldown``). Now the server refuses a write over a config changed since it was read
(ABORTED, nothing written), and the command reads again, lays its own flags over the other's change and
retries, so both changes land; after :data:`ATTEMPTS` refusals in a row it gives up, saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

Read = TypeVar("Read")
Written = TypeVar("Written")

#: Each refusal means another writer's change landed, so a few attempts outlast any burst of
#: concurrent commands an operator could start by hand; past them the command says so and exits 1.
ATTEMPTS = 5


def read_change_write(read: Callable[[], Read], write: Callable[[Read], Written], what: str) -> Written:
    """``write(read())``, read again and retried while ``write`` raises ``Aborted`` (the stored config
    changed after ``read``); ``Aborted`` naming ``what`` after :data:`ATTEMPTS` refusals."""
    from clients.errors import Aborted  # imports grpc: not for building the parser

    for _ in range(ATTEMPTS):
        current = read()
        try:
            return write(current)
        except Aborted as error:
            last = error.message
    raise Aborted(
        f"{what} was changed by other writers {ATTEMPTS} times while this command applied its flags;"
        f" this command changed nothing: run it again ({last})"
    )
