"""Firmware updates of one home, and the HTTP view nodes download bundles from.

`FirmwareUpdates` (a part of the home, wired in models.build_runtime_data) knows the bundle on
offer, runs at most `max_parallel_updates` updates at a time (the rest wait), publishes
`command/ota`, follows `response/ota` (routed here by the hub) and the version the node
reports, and ends each update with success only once the node runs the new version. The
update entities (update.py) read everything from it. Pure decisions are in homesync/firmware.py;
the wire format is in docs/protocol.md ("Firmware updates").

`FirmwareView` serves a bundle at `/api/heartbeat_iot/firmware/{token}/{file}` from Home
Assistant's own HTTP server. The token is random (256 bits), bound to one node, one version
and one file, and ends with that update (or after 30 minutes): no login and no long-lived
token ever goes into a URL. Unknown tokens get a plain 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import timedelta
import json
import logging
from pathlib import Path
from typing import Any
import uuid

from aiohttp import web
from homeassistant.components import mqtt
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.event import async_track_time_interval
from homeassistant.helpers.http import HomeAssistantView
from homeassistant.util.hass_dict import HassKey
from homeassistant.util.network import normalize_url

from .const import DOMAIN, HUB, KEY_BUNDLE, KEY_FIRMWARE, KEY_UPDATE
from .homesync.clock import Clock
from .homesync.firmware import (
    Bundle,
    Grants,
    UpdateJob,
    UpdateQueue,
    bundle_places,
    find_bundle,
    ota_command,
)
from .homesync.protocol import Category, build_topic
from .updates import Updates

_LOGGER = logging.getLogger(__package__)

VIEW_URL = "/api/heartbeat_iot/firmware"
RESCAN_INTERVAL = timedelta(minutes=5)
CHECK_INTERVAL = timedelta(seconds=1)
# Bundles built from this repository (./scripts/build-firmware) when the integration runs from
# a checkout, and a folder in Home Assistant's config directory for everyone else.
REPO_DIST = Path(__file__).resolve().parents[2] / "firmware" / "dist"
CONFIG_FOLDER = "heartbeat_iot_firmware"
DATA_GRANTS: HassKey[Grants] = HassKey(f"{DOMAIN}_firmware_grants")


def default_places(hass: HomeAssistant) -> list[Path]:
    """Where bundles are looked for when the options name no file or folder."""
    return [Path(hass.config.path(CONFIG_FOLDER)), REPO_DIST]


@callback
def async_get_grants(hass: HomeAssistant, clock: Clock) -> Grants:
    """The download grants shared by every home; registers the view on first use."""
    if (grants := hass.data.get(DATA_GRANTS)) is None:
        grants = hass.data[DATA_GRANTS] = Grants()
        hass.http.register_view(FirmwareView(grants, clock))
    return grants


class FirmwareView(HomeAssistantView):
    """Serves a bundle to the node holding a live grant (HTTP Range supported)."""

    url = VIEW_URL + "/{token}/{filename}"
    name = "api:heartbeat_iot:firmware"
    requires_auth = False  # nodes have no login: the one-time token is the authorisation

    def __init__(self, grants: Grants, clock: Clock) -> None:
        """Look tokens up in `grants`."""
        self._grants = grants
        self._clock = clock

    async def get(self, request: web.Request, token: str, filename: str) -> web.StreamResponse:
        """The bundle file, or 404 for an unknown or ended grant."""
        grant = self._grants.get(token, self._clock())
        if grant is None or grant.path.name != filename:
            return web.Response(status=404)
        _LOGGER.debug(
            "Serving firmware %s to %s (%s)",
            grant.version,
            grant.node_id,
            request.headers.get("Range", "whole file"),
        )
        return web.FileResponse(grant.path, headers={"Cache-Control": "no-store"})


class FirmwareUpdates:
    """The bundle on offer and the updates of one home's nodes."""

    def __init__(
        self,
        hass: HomeAssistant,
        *,
        home_id: str,
        bundle_path: str | None,
        max_parallel: int,
        clock: Clock,
        updates: Updates,
        firmware_of: Callable[[str], str | None],
        is_online: Callable[[str], bool],
        node_name: Callable[[str], str],
        spawn: Callable[[Coroutine[Any, Any, None], str], object],
    ) -> None:
        """Nothing runs until async_start."""
        self.hass = hass
        self.home_id = home_id
        self._bundle_path = bundle_path
        self._clock = clock
        self._updates = updates
        self._firmware_of = firmware_of
        self._is_online = is_online
        self._node_name = node_name
        self._spawn = spawn
        self.queue = UpdateQueue(max_parallel)
        self.bundle: Bundle | None = None
        self.bundle_errors: dict[str, str] = {}
        self._grants: Grants | None = None
        self._futures: dict[str, asyncio.Future[None]] = {}
        self._bases: dict[str, str] = {}  # node -> HA's URL as of the install call
        self._unlisten: dict[str, CALLBACK_TYPE] = {}
        self._stop_rescan: CALLBACK_TYPE | None = None
        self._stop_check: CALLBACK_TYPE | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def async_start(self) -> None:
        """Find the bundle on offer; look again every few minutes."""
        self._grants = async_get_grants(self.hass, self._clock)
        await self.async_rescan()

        async def rescan(_now: object) -> None:
            await self.async_rescan()

        self._stop_rescan = async_track_time_interval(self.hass, rescan, RESCAN_INTERVAL)

    @callback
    def async_stop(self) -> None:
        """Cancel every update (their install calls fail), end their grants, stop timers."""
        if self._stop_rescan is not None:
            self._stop_rescan()
            self._stop_rescan = None
        for job in self.queue.running() + self.queue.waiting():
            job.fail("update_cancelled")
            self._finish(job, start_next=False)
        if self._stop_check is not None:
            self._stop_check()
            self._stop_check = None

    async def async_rescan(self) -> None:
        """Read the bundle files again (in the executor) and announce a change."""
        places = bundle_places(self._bundle_path, default_places(self.hass))
        errors: dict[str, str] = {}
        bundle = await self.hass.async_add_executor_job(find_bundle, places, errors)
        for path, reason in errors.items():
            if self.bundle_errors.get(path) != reason:
                _LOGGER.warning("Ignoring firmware bundle %s: %s", path, reason)
        self.bundle_errors = errors
        if bundle != self.bundle:
            if bundle is not None:
                _LOGGER.info("Firmware %s on offer (%s)", bundle.version, bundle.path)
            self.bundle = bundle
            self._updates.async_notify(HUB, KEY_BUNDLE)

    # --- what entities read -----------------------------------------------------------------

    def job(self, node_id: str) -> UpdateJob | None:
        """The running or waiting update of `node_id`."""
        return self.queue.job(node_id)

    def diagnostics(self) -> dict[str, Any]:
        """The bundle on offer and the updates running or waiting (never a download token)."""
        bundle = self.bundle
        return {
            "bundle": None
            if bundle is None
            else {
                "version": bundle.version,
                "file": bundle.path.name,
                "size": bundle.size,
                "sha256": bundle.sha256,
            },
            "bundle_errors": {Path(path).name: why for path, why in self.bundle_errors.items()},
            "max_parallel_updates": self.queue.limit,
            "updates": [
                {
                    "node": job.node_id,
                    "version": job.version,
                    "phase": job.phase.value,
                    "progress": job.progress,
                }
                for job in self.queue.running() + self.queue.waiting()
            ],
        }

    # --- installing -------------------------------------------------------------------------

    def _error(self, key: str, node_id: str, **placeholders: str) -> HomeAssistantError:
        return HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key=key,
            translation_placeholders={"node": self._node_name(node_id), **placeholders},
        )

    def _base_url(self, node_id: str) -> str:
        """Home Assistant's local http:// URL: the configured internal URL, else the address
        its HTTP server listens on (`http: server_host`, or the detected local IP)."""
        if self.hass.config.internal_url:
            url = normalize_url(self.hass.config.internal_url)
        elif (api := self.hass.config.api) is not None and api.host and not api.use_ssl:
            url = f"http://{api.host}:{api.port}"
        else:
            raise self._error("update_no_url", node_id)
        if not url.startswith("http://"):
            raise self._error("update_no_url", node_id)
        return url

    async def async_install(self, node_id: str, version: str | None = None) -> None:
        """Update `node_id` to the bundle on offer; returns once the node runs it.

        Raises a translated HomeAssistantError when the update cannot start or fails.
        """
        bundle = self.bundle
        if bundle is None:
            raise self._error("update_no_bundle", node_id)
        if version is not None and version != bundle.version:
            raise self._error("update_version_unavailable", node_id, version=version)
        if not self._is_online(node_id):
            raise self._error("update_offline", node_id)
        if self.queue.job(node_id) is not None:
            raise self._error("update_already_running", node_id)
        self._bases[node_id] = self._base_url(node_id)  # fail now, not when its turn comes
        job = UpdateJob(node_id, bundle.version, f"ota-{uuid.uuid4().hex[:16]}")
        future: asyncio.Future[None] = self.hass.loop.create_future()
        self._futures[node_id] = future
        if self.queue.submit(job):
            await self._async_send(job)
        else:
            _LOGGER.info(
                "Update of %s to %s waits for a free slot", self._node_name(node_id), job.version
            )
        self._notify(node_id)
        await future
        if job.failure is not None:
            raise self._error(
                job.failure.key, node_id, version=job.version, reason=job.failure.reason
            )

    async def _async_send(self, job: UpdateJob) -> None:
        node_id = job.node_id
        bundle = self.bundle
        if not self._is_online(node_id):
            job.fail("update_offline")  # went offline while it waited
        elif bundle is None or bundle.version != job.version:
            job.fail("update_version_unavailable")  # the offer changed while it waited
        if bundle is None or job.finished:
            self._finish(job)
            return
        assert self._grants is not None
        base = self._bases[node_id]
        now = self._clock()
        grant = self._grants.issue(node_id, bundle, now)
        url = f"{base}{VIEW_URL}/{grant.token}/{bundle.path.name}"
        payload = ota_command(job, url, bundle, now)
        self._unlisten[node_id] = self._updates.async_listen(
            node_id, KEY_FIRMWARE, lambda: self._on_firmware(node_id)
        )
        job.sent(now)
        self._ensure_checking()
        _LOGGER.info(
            "Updating %s from %s to %s",
            self._node_name(node_id),
            self._firmware_of(node_id),
            job.version,
        )
        try:
            await mqtt.async_publish(
                self.hass,
                build_topic(self.home_id, node_id, Category.COMMAND, "ota"),
                json.dumps(payload),
                qos=1,
                retain=False,
            )
        except HomeAssistantError as err:
            job.fail("update_failed", str(err))
            self._finish(job)

    # --- what the node says -----------------------------------------------------------------

    @callback
    def handle_response(self, node_id: str, data: dict[str, Any]) -> None:
        """A response/ota from `node_id` (validated by the hub)."""
        job = self.queue.job(node_id)
        if job is None or data["request_id"] != job.request_id:
            _LOGGER.debug(
                "Ignoring response/ota %s from %s: no such update running",
                data.get("request_id"),
                node_id,
            )
            return
        if job.on_response(data, self._firmware_of(node_id), self._clock()):
            if job.finished:
                self._finish(job)
            else:
                self._notify(node_id)

    @callback
    def _on_firmware(self, node_id: str) -> None:
        job = self.queue.job(node_id)
        if job is not None and job.on_firmware(self._firmware_of(node_id)):
            self._finish(job)

    @callback
    def _ensure_checking(self) -> None:
        if self._stop_check is None:
            self._stop_check = async_track_time_interval(self.hass, self._check, CHECK_INTERVAL)

    @callback
    def _check(self, _now: object = None) -> None:
        now = self._clock()
        for job in self.queue.running():
            if job.check(now):
                self._finish(job)
        if not self.queue.running() and self._stop_check is not None:
            self._stop_check()
            self._stop_check = None

    @callback
    def _finish(self, job: UpdateJob, *, start_next: bool = True) -> None:
        node_id = job.node_id
        if self._grants is not None:
            self._grants.revoke_node(node_id)
        if (unlisten := self._unlisten.pop(node_id, None)) is not None:
            unlisten()
        self._bases.pop(node_id, None)
        started = self.queue.finish(node_id)
        if job.failure is None:
            _LOGGER.info("%s now runs firmware %s", self._node_name(node_id), job.version)
        else:
            _LOGGER.warning(
                "Update of %s to %s failed: %s %s",
                self._node_name(node_id),
                job.version,
                job.failure.key,
                job.failure.reason,
            )
        if (future := self._futures.pop(node_id, None)) is not None and not future.done():
            future.set_result(None)
        self._notify(node_id)
        for nxt in started:
            if start_next:
                self._spawn(self._async_send(nxt), f"{DOMAIN} update {nxt.node_id}")
            else:
                nxt.fail("update_cancelled")
                self._finish(nxt, start_next=False)

    @callback
    def _notify(self, node_id: str) -> None:
        self._updates.async_notify(node_id, KEY_UPDATE)
