"""The policy store: reloads, and how a second worker follows them through the marker file."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from authsvc.authz.cedar import PolicyLoadError
from authsvc.observability import Metrics
from authsvc.services.policies import PolicyStore

POLICIES = Path(__file__).resolve().parents[2] / "policies"
EXTRA = '@id("extra.one")\nforbid (principal, action == Action::"audit:read", resource);\n'


def reloads(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value("authsvc_policy_reloads_total", {"outcome": outcome})
    return value or 0.0


async def until(condition: object, timeout: float = 3.0) -> bool:
    assert callable(condition)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_second_worker_follows_reloads_and_ignores_a_stale_marker(tmp_path: Path) -> None:
    folder, marker = tmp_path / "policies", tmp_path / "data" / "policies-reloaded"
    shutil.copytree(POLICIES, folder)
    marker.parent.mkdir()
    # Left over from an earlier run with other files: not a reason to reload at start.
    marker.write_text(json.dumps({"digest": "0" * 64}))
    metrics_a, metrics_b = Metrics(), Metrics()
    first = PolicyStore(folder, marker, metrics_a)
    second = PolicyStore(folder, marker, metrics_b)
    follower = asyncio.create_task(second.follow(interval=0.05))
    try:
        await asyncio.sleep(0.3)
        assert reloads(metrics_b, "loaded") == 0

        (folder / "extra.cedar").write_text(EXTRA)
        new = await first.reload()
        assert "extra.one" in new.ids
        assert await until(lambda: second.bundle.digest == new.digest)
        assert reloads(metrics_b, "loaded") == 1

        # A broken folder: the first worker refuses it and announces nothing; the set stays.
        (folder / "extra.cedar").write_text('@id("extra.bad")\nforbid (principal')
        with pytest.raises(PolicyLoadError):
            await first.reload()
        assert first.bundle.digest == new.digest and reloads(metrics_a, "refused") == 1
        # Even if something announces a set the files here cannot give, the follower keeps its
        # set and does not retry the same announcement every second.
        marker.write_text(json.dumps({"digest": "1" * 64}))
        assert await until(lambda: reloads(metrics_b, "refused") == 1)
        await asyncio.sleep(0.3)
        assert reloads(metrics_b, "refused") == 1
        assert second.bundle.digest == new.digest
    finally:
        follower.cancel()
