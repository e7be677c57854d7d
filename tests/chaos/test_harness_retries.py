"""The chaos driver's own requests ride out an API server restart as the product's do (no real component)."""

from __future__ import annotations

import httpx
import pytest

from tests.chaos.harness import ApiError, Kube


def driver(answers: list[httpx.Response], seen: list[str]) -> Kube:
    def reply(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return answers.pop(0)

    kube = Kube.__new__(Kube)
    kube.client = httpx.AsyncClient(base_url="https://apiserver.invalid", transport=httpx.MockTransport(reply))
    return kube


async def test_a_get_retries_429_storage_reinitializing_after_its_retry_after():
    seen: list[str] = []
    reinitializing = httpx.Response(429, headers={"Retry-After": "0.1"},
                                    json={"kind": "Status", "message": "storage is (re)initializing", "code": 429})
    kube = driver([reinitializing, reinitializing, httpx.Response(200, json={"items": [{"spec": {"ip": "x"}}]})],
                  seen)
    assert await kube.ip_allocations() == [{"spec": {"ip": "x"}}]
    assert len(seen) == 3


async def test_without_retry_for_a_429_is_an_error_and_a_4xx_never_retried():
    seen: list[str] = []
    kube = driver([httpx.Response(429, json={}), httpx.Response(403, json={})], seen)
    with pytest.raises(ApiError) as first:
        await kube.get("/api/v1/namespaces")
    assert first.value.status == 429
    with pytest.raises(ApiError) as second:
        await kube.get("/api/v1/namespaces", retry_for=30)
    assert second.value.status == 403
    assert len(seen) == 2
