# -*- test-case-name: tests.integration.test_server -*-
"""`/1.0/resources`: CPU and memory of the host (`resources`)."""

from twisted.internet import threads

from lxdtx import hostinfo
from lxdtx.response import SyncResponse
from lxdtx.router import Endpoint


def _collect():
    return {
        "cpu": hostinfo.cpu(),
        "memory": hostinfo.memory(),
        "pool": {"space": {"total": 0}, "inodes": {"used": 0, "total": 0}},
    }


async def get_resources(req):
    return SyncResponse(await threads.deferToThread(_collect))


ENDPOINTS = [Endpoint("/1.0/resources", get=get_resources)]
