"""A real Home Assistant (``hass``) process, onboarded through its HTTP API, and a client.

:class:`Hass` writes a config dir (integrations listed explicitly: ``default_config:`` needs
packages that ``--skip-pip`` does not install), links this repository's custom component in,
starts ``python -m homeassistant`` and waits for its HTTP API. :meth:`Hass.onboard` does what
the onboarding pages do (create the user, then the core config, analytics and integration
steps) and removes the integrations that onboarding adds and that cannot work offline.
:class:`HassClient` speaks REST and WebSocket as the frontend does (blocking calls; its
asyncio loop runs in a thread of its own, so tests and the demo stay synchronous).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
import contextlib
import json
import os
from pathlib import Path
import queue
import sys
import threading
import time
from typing import Any, Literal, cast

import aiohttp

from .ports import HOST, free_port, port_in_use
from .procs import PartError, Proc

REPO = Path(__file__).resolve().parents[1]
COMPONENT = REPO / "custom_components" / "heartbeat_iot"
# Added by the onboarding core_config step; they need the Internet or packages --skip-pip
# does not install, and would greet the user with failed cards.
ONBOARDING_EXTRAS = ("google_translate", "met", "radio_browser", "shopping_list")
# What the demo needs instead of `default_config:` (whose usb, bluetooth, dhcp, ssdp, go2rtc,
# stream and mobile_app need packages that are not installed).
INTEGRATIONS = (
    "api",
    "automation",
    "blueprint",
    "config",
    "conversation",
    "counter",
    "energy",
    "history",
    "input_boolean",
    "input_button",
    "input_number",
    "input_select",
    "input_text",
    "logbook",
    "person",
    "scene",
    "schedule",
    "script",
    "sun",
    "system_health",
    "tag",
    "timer",
    "zone",
)

JSON = dict[str, Any]


def configuration_yaml(port: int, *, name: str, frontend: bool, debug: bool = False) -> str:
    """The demo's configuration.yaml."""
    lines = [
        "homeassistant:",
        f"  name: {name}",
        "  latitude: 52.52",
        "  longitude: 13.40",
        "  elevation: 34",
        "  unit_system: metric",
        "  currency: EUR",
        "  country: DE",
        "  time_zone: UTC",
        "  language: en",
        "http:",
        f"  server_host: {HOST}",
        f"  server_port: {port}",
        "recorder:",
        "  commit_interval: 1",
        "  purge_keep_days: 3",
        "logger:",
        "  default: warning",
        "  logs:",
        f"    custom_components.heartbeat_iot: {'debug' if debug else 'info'}",
        "    homeassistant.components.camera.img_util: critical",
    ]
    if frontend:
        lines.append("frontend:")
    lines += [f"{domain}:" for domain in INTEGRATIONS]
    return "\n".join(lines) + "\n"


def has_frontend() -> bool:
    """True when the ``home-assistant-frontend`` package is installed (demo requirements)."""
    try:
        import hass_frontend  # noqa: F401
    except ImportError:
        return False
    return True


class Hass:
    """A ``hass`` process with its config dir."""

    name = "home assistant"

    def __init__(
        self,
        config_dir: Path | str,
        port: int | None = None,
        *,
        title: str = "HomeSync demo",
        frontend: bool | None = None,
        debug: bool = False,
    ) -> None:
        self.config_dir = Path(config_dir)
        self.port = port if port is not None else free_port()
        self.title = title
        self.frontend = has_frontend() if frontend is None else frontend
        self.debug = debug
        self.log_path = self.config_dir / "home-assistant.log"
        self.stdout_path = self.config_dir.parent / "hass.log"
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        """Base URL (no trailing slash)."""
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Real PID of the hass process."""
        return self.proc.pid if self.proc is not None else None

    def write_config(self) -> None:
        """configuration.yaml, and the custom component linked in."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "configuration.yaml").write_text(
            configuration_yaml(self.port, name=self.title, frontend=self.frontend, debug=self.debug)
        )
        for name in ("automations.yaml", "scripts.yaml", "scenes.yaml"):
            path = self.config_dir / name
            if not path.exists():
                path.write_text("[]\n" if name == "automations.yaml" else "{}\n")
        custom = self.config_dir / "custom_components"
        custom.mkdir(exist_ok=True)
        link = custom / COMPONENT.name
        if link.is_symlink() and link.resolve() == COMPONENT.resolve():
            return
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(COMPONENT)

    def launcher(self) -> list[str]:
        """The command that runs Home Assistant (its arguments follow)."""
        return [sys.executable, "-m", "homeassistant"]

    def start(self, timeout: float = 90.0) -> None:
        """Start hass and wait until its HTTP API answers."""
        if self.proc is not None and self.proc.running():
            return
        if port_in_use(self.port):
            raise PartError(self.name, f"port {self.port} is already in use", self.stdout_path)
        self.write_config()
        env = dict(os.environ)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        cmd = [*self.launcher(), "-c", str(self.config_dir), "--skip-pip"]
        self.proc = Proc(self.name, cmd, self.stdout_path, env=env)
        self.proc.start()
        self.proc.wait_until(self._http_ready, timeout, f"answering on {self.url}", interval=0.25)

    def _http_ready(self) -> bool:
        import urllib.error
        import urllib.request

        # hass opens its HTTP port early in its startup (the frontend shows "starting").
        # Ready to log in: the onboarding API answers (new config dir) or, once onboarded,
        # the login page's provider list does. HassClient.wait_running waits for the rest.
        for path in ("/api/onboarding", "/auth/providers"):
            try:
                with urllib.request.urlopen(f"{self.url}{path}", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except OSError:  # HTTPError (404 once onboarded, 400 before) included
                continue
        return False

    def running(self) -> bool:
        """True while hass lives."""
        return self.proc is not None and self.proc.running()

    def stop(self, timeout: float = 25.0) -> None:
        """SIGTERM (hass saves its state and stops), SIGKILL after ``timeout``."""
        if self.proc is not None:
            self.proc.stop(timeout)

    def kill(self) -> None:
        """SIGKILL."""
        if self.proc is not None:
            self.proc.kill()

    def restart(self, timeout: float = 90.0) -> None:
        """Stop and start again on the same port."""
        self.stop()
        deadline = time.monotonic() + 10
        while port_in_use(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.start(timeout)

    def check(self) -> None:
        """Raise :class:`PartError` when hass exited."""
        if self.proc is not None:
            self.proc.check()

    def client(self, username: str, password: str) -> HassClient:
        """A logged-in client (creates the user first if onboarding has not done so)."""
        return HassClient(self.url, username, password)


class ApiError(RuntimeError):
    """An HTTP or WebSocket call returned an error."""

    def __init__(self, message: str, *, status: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.data = data


class Subscription:
    """Events of one WebSocket subscription, as a thread-safe queue."""

    def __init__(self, client: HassClient, sub_id: int) -> None:
        self.client = client
        self.id = sub_id
        self.queue: queue.Queue[JSON] = queue.Queue()

    def get(self, timeout: float) -> JSON:
        """Next event (``queue.Empty`` after ``timeout``)."""
        return self.queue.get(timeout=timeout)

    def drain(self) -> list[JSON]:
        """Every event received so far."""
        out: list[JSON] = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                return out

    def wait_for(self, match: Callable[[JSON], bool], timeout: float) -> JSON:
        """The first event (from now on, kept ones included) for which ``match`` is true."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching event")
            try:
                event = self.queue.get(timeout=left)
            except queue.Empty:
                raise TimeoutError("no matching event") from None
            if match(event):
                return event


class HassClient:
    """REST + WebSocket client of one Home Assistant user (blocking API)."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url
        self.client_id = base_url + "/"
        self.username = username
        self.password = password
        self.access_token = ""
        self.refresh_token = ""
        self._token_at = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._next_id = 1
        self._pending: dict[int, asyncio.Future[JSON]] = {}
        self._subs: dict[int, Subscription] = {}

    # ------------------------------------------------------------------ plumbing
    def _run[T](self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    def close(self) -> None:
        """Close the WebSocket and HTTP session; stop the client's thread."""

        async def _close() -> None:
            await self._ws_close()
            if self._session is not None:
                await self._session.close()

        try:
            self._run(_close(), 10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    # ------------------------------------------------------------------ auth
    def onboard_user(self, name: str = "Demo") -> None:
        """Create the owner as the onboarding page does, and log in with its auth code."""
        data = self.post(
            "/api/onboarding/users",
            {
                "client_id": self.client_id,
                "name": name,
                "username": self.username,
                "password": self.password,
                "language": "en",
            },
            auth=False,
        )
        self._token({"grant_type": "authorization_code", "code": data["auth_code"]})

    def login(self) -> None:
        """Log in through the login flow, as the login page does."""
        flow = self.post(
            "/auth/login_flow",
            {
                "client_id": self.client_id,
                "handler": ["homeassistant", None],
                "redirect_uri": self.client_id + "?auth_callback=1",
            },
            auth=False,
        )
        result = self.post(
            f"/auth/login_flow/{flow['flow_id']}",
            {"client_id": self.client_id, "username": self.username, "password": self.password},
            auth=False,
        )
        if result.get("type") != "create_entry":
            raise ApiError(f"login as {self.username!r} refused: {result.get('errors')}")
        self._token({"grant_type": "authorization_code", "code": result["result"]})

    def _token(self, form: dict[str, str]) -> None:
        async def _post() -> JSON:
            sess = await self._sess()
            payload = {**form, "client_id": self.client_id}
            async with sess.post(self.base_url + "/auth/token", data=payload) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    raise ApiError(f"/auth/token: {resp.status} {body}", status=resp.status)
                return cast(JSON, body)

        data = self._run(_post())
        self.access_token = data["access_token"]
        self.refresh_token = data.get("refresh_token", self.refresh_token)
        self._token_at = time.monotonic()

    def _fresh_token(self) -> str:
        if self.refresh_token and time.monotonic() - self._token_at > 1200:  # tokens live 30 min
            self._token({"grant_type": "refresh_token", "refresh_token": self.refresh_token})
        return self.access_token

    # ------------------------------------------------------------------ REST
    def request(
        self, method: str, path: str, body: Any = None, *, auth: bool = True, timeout: float = 30
    ) -> Any:
        """One REST call; JSON in and out; :class:`ApiError` on a status >= 400."""
        headers = {"Authorization": f"Bearer {self._fresh_token()}"} if auth else {}

        async def _call() -> Any:
            sess = await self._sess()
            async with sess.request(
                method,
                self.base_url + path,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                text = await resp.text()
                try:
                    data = json.loads(text) if text else None
                except ValueError:
                    data = text
                if resp.status >= 400:
                    raise ApiError(
                        f"{method} {path}: {resp.status} {text[:300]}",
                        status=resp.status,
                        data=data,
                    )
                return data

        return self._run(_call(), timeout + 5)

    def get(self, path: str, **kwargs: Any) -> Any:
        """GET."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        """POST."""
        return self.request("POST", path, body, **kwargs)

    def state(self, entity_id: str) -> JSON | None:
        """``/api/states/<entity_id>`` (None when HA does not know it)."""
        try:
            return cast(JSON, self.get(f"/api/states/{entity_id}"))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    # ------------------------------------------------------------------ WebSocket
    def ws_connect(self) -> None:
        """(Re)open the WebSocket and authenticate."""
        self._run(self._ws_open())

    async def _ws_open(self) -> None:
        await self._ws_close()
        sess = await self._sess()
        ws = await sess.ws_connect(self.base_url + "/api/websocket", max_msg_size=0)
        first = await ws.receive_json()
        if first.get("type") != "auth_required":
            raise ApiError(f"websocket: unexpected {first}")
        await ws.send_json({"type": "auth", "access_token": self._fresh_token()})
        answer = await ws.receive_json()
        if answer.get("type") != "auth_ok":
            raise ApiError(f"websocket auth failed: {answer}")
        self._ws = ws
        self._reader = asyncio.get_running_loop().create_task(self._read(ws))

    async def _ws_close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ApiError("websocket closed"))
        self._pending.clear()
        self._subs.clear()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            items = json.loads(msg.data)
            for item in items if isinstance(items, list) else [items]:
                msg_id = item.get("id")
                if item.get("type") == "event" and msg_id in self._subs:
                    self._subs[msg_id].queue.put(item["event"])
                elif msg_id in self._pending:
                    fut = self._pending.pop(msg_id)
                    if not fut.done():
                        fut.set_result(item)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ApiError("websocket closed"))
        self._pending.clear()

    async def _ws_send(self, message: JSON) -> tuple[int, asyncio.Future[JSON]]:
        if self._ws is None or self._ws.closed:
            await self._ws_open()
        assert self._ws is not None
        msg_id = self._next_id
        self._next_id += 1
        fut: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self._ws.send_json({**message, "id": msg_id})
        return msg_id, fut

    def ws(self, message_type: str, timeout: float = 60, **fields: Any) -> Any:
        """One WebSocket command; its ``result``, or :class:`ApiError` with HA's error."""

        async def _call() -> JSON:
            _, fut = await self._ws_send({"type": message_type, **fields})
            return await asyncio.wait_for(fut, timeout)

        answer = self._run(_call(), timeout + 5)
        if not answer.get("success"):
            error = answer.get("error") or {}
            raise ApiError(
                f"{message_type}: {error.get('code')}: {error.get('message')}", data=error
            )
        return answer.get("result")

    def subscribe(self, message_type: str = "subscribe_events", **fields: Any) -> Subscription:
        """Subscribe (``subscribe_events``, ``subscribe_trigger``...); events go to a queue."""

        async def _call() -> Subscription:
            msg_id, fut = await self._ws_send({"type": message_type, **fields})
            sub = Subscription(self, msg_id)
            self._subs[msg_id] = sub
            answer = await asyncio.wait_for(fut, 30)
            if not answer.get("success"):
                self._subs.pop(msg_id, None)
                raise ApiError(f"{message_type}: {answer.get('error')}")
            return sub

        return self._run(_call())

    def call_service(
        self,
        domain: str,
        service: str,
        data: JSON | None = None,
        *,
        target: JSON | None = None,
        return_response: bool = False,
        timeout: float = 60,
    ) -> Any:
        """``call_service`` over the WebSocket (errors carry HA's translated message)."""
        fields: JSON = {"domain": domain, "service": service, "service_data": data or {}}
        if target:
            fields["target"] = target
        if return_response:
            fields["return_response"] = True
        return self.ws("call_service", timeout=timeout, **fields)

    # ------------------------------------------------------------------ waiting
    def wait(
        self, check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2
    ) -> Any:
        """Poll ``check()`` until it returns something truthy; TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = check()
            except (ApiError, aiohttp.ClientError, OSError) as err:
                last_error = err
                value = None
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"{what}: not after {timeout:.0f} s (last error: {last_error})")

    def wait_running(self, timeout: float = 90) -> None:
        """Wait until hass finished starting (every integration set up: state RUNNING)."""
        self.wait(
            lambda: self.get("/api/config").get("state") == "RUNNING",
            timeout,
            "Home Assistant running",
        )

    # ------------------------------------------------------------------ setup steps
    def config_entries(self, domain: str | None = None) -> list[JSON]:
        """Config entries (of one domain)."""
        entries = cast(list[JSON], self.get("/api/config/config_entries/entry"))
        return [e for e in entries if domain is None or e["domain"] == domain]

    def flows_in_progress(self) -> list[JSON]:
        """Config flows in progress (WebSocket only)."""
        return cast(list[JSON], self.ws("config_entries/flow/progress"))


def onboard(hass: Hass, username: str, password: str, name: str = "Demo") -> HassClient:
    """Log in; on a new config dir first do every onboarding step as the pages do."""
    client = hass.client(username, password)
    try:
        steps = {s["step"]: s["done"] for s in client.get("/api/onboarding", auth=False)}
    except ApiError as err:
        if err.status != 404:
            raise
        steps = dict.fromkeys(("user", "core_config", "analytics", "integration"), True)
    if not steps.get("user"):
        client.onboard_user(name)
    else:
        client.login()
    if not steps.get("core_config"):
        client.ws_connect()
        client.post("/api/onboarding/core_config", {})
        _remove_onboarding_extras(client)
    if not steps.get("analytics"):
        client.post("/api/onboarding/analytics", {})
    if not steps.get("integration"):
        client.post(
            "/api/onboarding/integration",
            {"client_id": client.client_id, "redirect_uri": client.client_id + "?auth_callback=1"},
        )
    client.wait_running()
    client.ws_connect()
    return client


def _remove_onboarding_extras(client: HassClient) -> None:
    """Abort or delete what the core_config step started (weather, TTS, radio, lists).

    The step starts those flows as background tasks; wait until none is left in progress
    and nothing new appeared for two seconds (at most 20 s on a busy machine).
    """
    deadline = time.monotonic() + 20
    quiet_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 2:
        flows = [
            f
            for f in client.ws("config_entries/flow/progress")
            if f["handler"] in ONBOARDING_EXTRAS
        ]
        entries = [e for e in client.config_entries() if e["domain"] in ONBOARDING_EXTRAS]
        for flow in flows:
            with contextlib.suppress(ApiError):
                client.request("DELETE", f"/api/config/config_entries/flow/{flow['flow_id']}")
        for entry in entries:
            client.request("DELETE", f"/api/config/config_entries/entry/{entry['entry_id']}")
        if flows or entries:
            quiet_since = time.monotonic()
        time.sleep(0.3)


def onboarding_leftovers(client: HassClient) -> list[str]:
    """Components that onboarding's extras loaded and that stay loaded until a restart
    (the shopping list brings the *To-do lists* panel)."""
    components = set(client.get("/api/config").get("components", []))
    return sorted(components & {*ONBOARDING_EXTRAS, "todo", "tts", "weather"})


def add_mqtt_entry(
    client: HassClient,
    host: str,
    port: int,
    username: str | None = None,
    password: str | None = None,
) -> JSON:
    """The MQTT integration pointing at the broker, through the config-flow API."""
    for entry in client.config_entries("mqtt"):
        return entry
    flow = client.post(
        "/api/config/config_entries/flow", {"handler": "mqtt", "show_advanced_options": False}
    )
    if flow.get("type") == "menu":  # newer HA versions ask how; 2025.4.4 goes to the form
        flow = client.post(
            f"/api/config/config_entries/flow/{flow['flow_id']}", {"next_step_id": "broker"}
        )
    form: JSON = {"broker": host, "port": port}
    if username is not None:
        form |= {"username": username, "password": password or ""}
    result = client.post(f"/api/config/config_entries/flow/{flow['flow_id']}", form)
    if result.get("type") != "create_entry":
        raise PartError("home assistant", f"MQTT entry not created: {result}")
    return cast(JSON, result["result"])


def patch_mqtt_port(
    config_dir: Path, port: int, login: tuple[str, str] | Literal[False] | None = False
) -> bool:
    """Point the stored MQTT entry at ``port`` (hass must be stopped); True when changed.

    A rerun whose old broker port is taken gets a new free one; the entry follows it.
    ``login``: ``(username, password)`` to set, ``None`` to remove it, ``False`` to leave it
    (a rerun may switch between an open broker and one with logins).
    """
    path = config_dir / ".storage" / "core.config_entries"
    if not path.exists():
        return False
    data = json.loads(path.read_text())
    changed = False
    for entry in data["data"]["entries"]:
        if entry["domain"] != "mqtt":
            continue
        if entry["data"].get("port") != port:
            entry["data"]["port"] = port
            changed = True
        if login is False:
            continue
        wanted = {} if login is None else {"username": login[0], "password": login[1]}
        current = {k: entry["data"][k] for k in ("username", "password") if k in entry["data"]}
        if current != wanted:
            for key in ("username", "password"):
                entry["data"].pop(key, None)
            entry["data"].update(wanted)
            changed = True
    if changed:
        path.write_text(json.dumps(data, indent=2))
    return changed


def accept_discovery(client: HassClient, domain: str, timeout: float = 30) -> JSON:
    """Click *Add* on the discovered card: finish the domain's MQTT discovery flow."""
    existing = client.config_entries(domain)
    if existing:
        return existing[0]

    def discovered() -> JSON | None:
        for flow in client.flows_in_progress():
            if flow["handler"] == domain and flow["context"].get("source") == "mqtt":
                return flow
        return None

    flow = client.wait(discovered, timeout, f"a discovered {domain} flow")
    result = client.post(f"/api/config/config_entries/flow/{flow['flow_id']}", {})
    if result.get("type") != "create_entry":
        raise PartError("home assistant", f"{domain} discovery not accepted: {result}")
    return cast(JSON, result["result"])


def set_options(client: HassClient, entry_id: str, options: JSON) -> JSON:
    """Submit the options form of an entry (fields not given keep their current value)."""
    flow = client.post("/api/config/config_entries/options/flow", {"handler": entry_id})
    values: JSON = {}
    for field in flow.get("data_schema", []):
        suggested = (field.get("description") or {}).get("suggested_value")
        if suggested is not None:
            values[field["name"]] = suggested
        elif "default" in field:
            values[field["name"]] = field["default"]
    values.update(options)
    result = client.post(f"/api/config/config_entries/options/flow/{flow['flow_id']}", values)
    if result.get("type") != "create_entry":
        raise ApiError(f"options not saved: {result}")
    return cast(JSON, result)
