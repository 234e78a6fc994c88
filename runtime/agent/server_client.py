"""The agent's calls to its model server: V2 repository API, readiness and model usage."""

import json

import aiohttp

from runtime.agent.headers import USAGE_PATH


class ServerError(Exception):
    """The model server refused an operation; the message is its own error."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ServerClient:
    def __init__(self, host: str, http_port: int, usage: bool = True):
        self.base = f"http://{host}:{http_port}"
        # the name hook's usage endpoint: MLServer has it, Triton not (its agent's proxy sees
        # every request and notes usage itself)
        self.has_usage = usage
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def ready(self) -> bool:
        try:
            async with self.session.get(f"{self.base}/v2/health/ready",
                                        timeout=aiohttp.ClientTimeout(total=2)) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _repository(self, internal_name: str, action: str) -> None:
        url = f"{self.base}/v2/repository/models/{internal_name}/{action}"
        try:
            async with self.session.post(url) as r:
                if r.status == 200:
                    return
                body = await r.text()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ServerError(f"model server unreachable: {e}") from None
        raise ServerError(f"model server could not {action} the model: "
                          f"{_error_text(body, r.status)}", r.status)

    async def load(self, internal_name: str) -> None:
        await self._repository(internal_name, "load")

    async def unload(self, internal_name: str) -> None:
        await self._repository(internal_name, "unload")

    async def loaded(self) -> set[str]:
        """Names of the models the server holds ready right now."""
        async with self.session.post(f"{self.base}/v2/repository/index", json={}) as r:
            r.raise_for_status()
            index = await r.json()
        return {m["name"] for m in index if m.get("state") == "READY"}

    async def usage(self) -> dict[str, float]:
        """internal name -> unix time of its last inference (kept by the name hook)."""
        if not self.has_usage:
            return {}
        try:
            async with self.session.get(self.base + USAGE_PATH,
                                        timeout=aiohttp.ClientTimeout(total=2)) as r:
                return {str(k): float(v) for k, v in (await r.json()).items()}
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
            return {}


def _error_text(body: str, status: int) -> str:
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and parsed.get("error"):
            return str(parsed["error"])
    except ValueError:
        pass
    lines = [line.strip() for line in body.strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Traceback"):
        return lines[-1][:500]  # the exception, not the stack
    return f"HTTP {status}: {body.strip()[:500]}"
