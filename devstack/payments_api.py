"""The payments API (the webhook service's internal port) as the devstack tools ask it: a
ride's record, what a rider owes. Every failure is one line, never a traceback."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp

TIMEOUT = aiohttp.ClientTimeout(total=10)


class PaymentsApiError(Exception):
    """The API could not be reached or answered something unexpected; the message says so."""


class PaymentsApi:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str | None) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def payment(self, ride_id: str) -> dict[str, Any] | None:
        """The ride's record, or None when no payment exists for it."""
        status, body = await self._get(f"/payments/{quote(ride_id, safe='')}")
        return None if status == 404 else self._answer(status, body)

    async def outstanding(self, user_id: str) -> dict[str, Any]:
        status, body = await self._get(f"/users/{quote(user_id, safe='')}/outstanding")
        return self._answer(status, body)

    async def _get(self, path: str) -> tuple[int, object]:
        url = self._base_url + path
        try:
            async with self._session.get(url, headers=self._headers, timeout=TIMEOUT) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            reason = str(error) or type(error).__name__
            raise PaymentsApiError(f"cannot reach the payments API at {url}: {reason}") from None
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text[:200]

    def _answer(self, status: int, body: object) -> dict[str, Any]:
        if status != 200 or not isinstance(body, dict):
            raise PaymentsApiError(f"the payments API answered {status}: {body}")
        return body
