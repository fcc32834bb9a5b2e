"""The actor ``aetherctl`` names when auth is off, also for a uid the system has no name for."""

from __future__ import annotations

import os

import pytest

from control_plane.cli.settings import actor

NAMELESS_UID = 54_321  # no passwd entry on any machine this runs on (checked below)


def test_a_user_is_named_as_the_system_names_them() -> None:
    assert actor()


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming a uid without a passwd entry needs root")
def test_a_uid_without_a_name_is_uid_n_not_a_traceback() -> None:
    # docker run --user 54321: getpass raised KeyError, a traceback for every aetherctl command.
    import pwd

    with pytest.raises(KeyError):
        pwd.getpwuid(NAMELESS_UID)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child becomes that uid, with no user variables, and reports what actor() says
        try:
            os.close(read)
            for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
                os.environ.pop(name, None)
            os.setgid(NAMELESS_UID)
            os.setuid(NAMELESS_UID)
            os.write(write, actor().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        said = answer.read()
    os.waitpid(child, 0)
    assert said == f"uid:{NAMELESS_UID}"
