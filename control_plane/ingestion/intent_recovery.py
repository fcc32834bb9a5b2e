"""The control plane's intent recovery (``intents.recover``): one pass when the ingestion service starts,
then one every ``INTENT_RECOVERY_INTERVAL_S`` in the background, each in a worker thread.

A pass removes the offline files of the chunks whose intent lapsed (a run killed between its offline
write and the transaction counting them, or whose COMMIT's outcome stayed unknown) and deletes those
intents; an intent younger than the lease (``claim_lease_s``) belongs to a run that may still commit it
and is left alone, and a committed chunk has no intent left. The start pass runs before any compaction
pass (whose first one waits an interval), so a file left by a run killed while the control plane was
down is removed before compaction could merge it. A pass that fails (the database out of reach: one
warning line) is retried next time; an intent whose files the store could not remove is retried in a
later pass (one line a pass for all of them), and one the recovery will not act on is marked ``invalid``
and logged once (``intents.recover``).
"""

from __future__ import annotations

import asyncio
import logging

from control_plane.background import TRANSIENT_FAILURES, BackgroundLoop
from control_plane.ingestion.batch import BatchMaterializer
from control_plane.ingestion.intents import Recovery

#: Between two background passes. A pass is one indexed query when nothing lapsed.
INTENT_RECOVERY_INTERVAL_S = 60.0

_log = logging.getLogger("aether.ingestion.intents")


class IntentRecoveryLoop:
    def __init__(self, batch: BatchMaterializer, interval_s: float = INTENT_RECOVERY_INTERVAL_S) -> None:
        self._batch = batch
        self._interval_s = interval_s
        self._background = BackgroundLoop("ingestion-intent-recovery")

    def run_once(self) -> Recovery | None:
        """One pass; None when it failed (logged)."""
        try:
            return self._batch.recover_intents()  # it logs the intents it could not settle, one line
        except TRANSIENT_FAILURES as exc:  # the database out of reach: one line, no traceback
            _log.warning(
                "recovering the offline files of uncounted chunks failed, retrying next pass: %s", exc
            )
        except Exception:
            _log.exception("recovering the offline files of uncounted chunks failed; retrying next pass")
        return None

    async def _run(self) -> None:
        while self._background.running:
            await self._background.pause(self._interval_s)
            if not self._background.running:
                break
            await asyncio.to_thread(self.run_once)

    def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()
