"""A control plane's deployment plan stream, scripted by a test: ``WatchDeploymentPlans`` yields the
snapshots put on ``queue``; None ends the stream (as a control plane's restart does), and the watch's next
stream takes the snapshots put after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc.aio

from clients.aether.v1 import deployments_pb2 as dpb
from clients.aether.v1 import deployments_pb2_grpc as dpb_grpc


class ScriptedPlans(dpb_grpc.DeploymentsServicer):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[dpb.DeploymentPlanSnapshot | None] = asyncio.Queue()
        self.streams = 0

    async def WatchDeploymentPlans(
        self, request: dpb.WatchDeploymentPlansRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[dpb.DeploymentPlanSnapshot]:
        self.streams += 1
        while (snapshot := await self.queue.get()) is not None:
            yield snapshot
