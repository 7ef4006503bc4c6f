"""Typed entry, runtime data and options of one home; the clock; how the parts are put together.

`HomeSyncOptions` is parsed once from entry.options at setup (an options change reloads the
entry, so nothing re-reads options later). `HomeSyncRuntimeData` holds the parts of one home,
each with one job; `async_build` wires them with narrow callables so no part imports another's
owner. See docs/architecture.md (module map).
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
import time
from typing import Any, Self

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback

from .announce import HubAnnouncement
from .availability import AvailabilityMonitor
from .const import (
    CONF_COMMAND_RETRIES,
    CONF_COMMAND_TIMEOUT,
    CONF_FIRMWARE_PATH,
    CONF_FLAP_TRANSITIONS,
    CONF_FLAP_WINDOW,
    CONF_HEARTBEAT_INTERVAL,
    CONF_HOME_ID,
    CONF_MAX_METRICS,
    CONF_MAX_NODES,
    CONF_MAX_PARALLEL_UPDATES,
    CONF_MIN_TIMEOUT,
    CONF_OFFLINE_RATIO,
    CONF_STALE_DAYS,
    CONF_TCP_NODELAY,
    CONF_TIMEOUT_MULTIPLIER,
    DEFAULT_OPTIONS,
)
from .control import NodeControl
from .firmware import FirmwareUpdates
from .homesync.stats import MessageStats
from .homesync.tracker import TrackerSettings
from .hub import HomeSyncHub
from .nodes import NodeRegistry
from .outputs import NodeOutputs
from .stale import DAY, StaleNodeMonitor
from .stats import HomeStatistics
from .storage import NodeStorage, collect, restore
from .updates import Updates


def now() -> float:
    """The integration's one wall clock, UNIX seconds.

    The same clock as Home Assistant's `dt_util.utcnow()` (tests' freezer moves both), read
    once per message: `time.time()` costs ~0.06 µs against ~0.4 µs for `utcnow().timestamp()`
    (benchmarks/README.md, bench_hub).
    """
    # Looked up on the module at each call (not `from time import time`): freezegun patches it.
    return time.time()


@dataclass(frozen=True, slots=True, kw_only=True)
class HomeSyncOptions:
    """The entry options, typed; defaults for anything missing."""

    max_nodes: int
    max_metrics: int
    heartbeat_interval: float
    timeout_multiplier: float
    min_timeout: float
    flap_transitions: int
    flap_window: float
    offline_ratio_threshold: float
    command_timeout: float
    command_retries: int
    tcp_nodelay: bool  # set TCP_NODELAY on Home Assistant's MQTT connection
    stale_after_days: int  # silence after which a repair offers to remove a node
    max_parallel_updates: int
    firmware_path: str | None  # a bundle file or folder; None: the default places

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Self:
        """Parse entry.options (the options flow already validated the ranges)."""
        merged = {**DEFAULT_OPTIONS, **options}
        return cls(
            max_nodes=int(merged[CONF_MAX_NODES]),
            max_metrics=int(merged[CONF_MAX_METRICS]),
            heartbeat_interval=float(merged[CONF_HEARTBEAT_INTERVAL]),
            timeout_multiplier=float(merged[CONF_TIMEOUT_MULTIPLIER]),
            min_timeout=float(merged[CONF_MIN_TIMEOUT]),
            flap_transitions=int(merged[CONF_FLAP_TRANSITIONS]),
            flap_window=float(merged[CONF_FLAP_WINDOW]),
            offline_ratio_threshold=float(merged[CONF_OFFLINE_RATIO]),
            command_timeout=float(merged[CONF_COMMAND_TIMEOUT]),
            command_retries=int(merged[CONF_COMMAND_RETRIES]),
            tcp_nodelay=bool(merged[CONF_TCP_NODELAY]),
            stale_after_days=int(merged[CONF_STALE_DAYS]),
            max_parallel_updates=int(merged[CONF_MAX_PARALLEL_UPDATES]),
            firmware_path=str(merged.get(CONF_FIRMWARE_PATH) or "").strip() or None,
        )

    @property
    def tracker_settings(self) -> TrackerSettings:
        """What the heartbeat tracker needs of the options."""
        return TrackerSettings(
            default_interval=self.heartbeat_interval,
            multiplier=self.timeout_multiplier,
            min_timeout=self.min_timeout,
            flap_transitions=self.flap_transitions,
            flap_window=self.flap_window,
        )


@dataclass(slots=True, kw_only=True)
class HomeSyncRuntimeData:
    """The parts of one home (entry.runtime_data); each owns one job."""

    home_id: str
    options: HomeSyncOptions
    updates: Updates  # the one way entities hear about changes
    nodes: NodeRegistry  # discovery, cap, devices, metrics, firmware
    outputs: NodeOutputs  # relay and LED state
    availability: AvailabilityMonitor  # tracker, its timer, transition logs, node events
    control: NodeControl  # commands, confirmations, offline queue
    storage: NodeStorage  # the Store of the home
    stale: StaleNodeMonitor  # repair issues for nodes silent for days
    stats: HomeStatistics  # command and message counters (sensors, diagnostics)
    hub: HomeSyncHub  # subscription and routing
    announcement: HubAnnouncement  # tells the nodes to re-publish their state (docs/protocol.md)
    firmware: FirmwareUpdates  # the bundle on offer, update jobs and their queue

    async def async_start(self) -> None:
        """Restore known nodes, then subscribe (so entities exist before any message)."""
        restore(
            await self.storage.async_load(),
            self.nodes,
            self.availability,
            self.outputs,
            self.control,
        )
        self.nodes.async_register_devices()
        self.availability.async_start()
        self.stale.async_start()
        self.stats.async_start()
        await self.firmware.async_start()
        await self.hub.async_start()
        await self.announcement.async_start()

    async def async_stop(self) -> None:
        """Unsubscribe, stop the timers, cancel what is in flight and write what is pending."""
        self.announcement.async_stop()
        self.hub.async_stop()
        self.stale.async_stop()
        self.stats.async_stop()
        self.firmware.async_stop()
        self.availability.async_stop()
        self.control.stop()
        await self.storage.async_save()

    @callback
    def async_forget_node(self, node_id: str) -> None:
        """Drop a node (its device was removed in the UI); it returns on its next message."""
        if not self.nodes.async_forget(node_id):
            return
        self.hub.async_forget(node_id)
        self.availability.async_forget(node_id)
        self.outputs.forget(node_id)
        self.control.forget(node_id)
        self.stale.forget(node_id)
        self.storage.schedule_save()


type HomeSyncConfigEntry = ConfigEntry[HomeSyncRuntimeData]


def build_runtime_data(hass: HomeAssistant, entry: HomeSyncConfigEntry) -> HomeSyncRuntimeData:
    """Create the parts of one home and wire them together (nothing starts yet)."""
    home_id: str = entry.data[CONF_HOME_ID]
    options = HomeSyncOptions.from_options(entry.options)
    updates = Updates()

    # The parts reference each other through these late-bound callables only.
    def collect_all() -> dict[str, Any]:
        return collect(nodes, availability, outputs, control)

    def spawn(coro: Coroutine[Any, Any, None], name: str) -> object:
        # eager_start=False: never run inside the hub's message handling.
        return entry.async_create_background_task(hass, coro, name, eager_start=False)

    storage = NodeStorage(hass, entry.entry_id, collect_all)
    nodes = NodeRegistry(
        hass,
        entry_id=entry.entry_id,
        home_id=home_id,
        max_nodes=options.max_nodes,
        max_metrics=options.max_metrics,
        updates=updates,
        schedule_save=storage.schedule_save,
    )
    outputs = NodeOutputs(updates, is_known=nodes.__contains__, schedule_save=storage.schedule_save)
    availability = AvailabilityMonitor(
        hass,
        home_id=home_id,
        settings=options.tracker_settings,
        clock=now,
        updates=updates,
        is_known=nodes.__contains__,
        device_id=nodes.device_id,
        on_online=lambda node_id: control.node_online(node_id),
        on_rebooted=outputs.async_rebooted,
        schedule_save=storage.schedule_save,
    )
    control = NodeControl(
        hass,
        home_id=home_id,
        timeout=options.command_timeout,
        retries=options.command_retries,
        clock=now,
        updates=updates,
        outputs=outputs,
        is_online=availability.node_online,
        node_name=nodes.node_name,
        device_id=nodes.device_id,
        schedule_save=storage.schedule_save,
        spawn=spawn,
        stats_changed=lambda: stats.async_commands_changed(),
    )
    stats = HomeStatistics(
        hass, messages=MessageStats(), control=lambda: control, clock=now, updates=updates
    )

    def last_seen(node_id: str) -> float | None:
        status = availability.status(node_id)
        return None if status is None else status.last_seen

    stale = StaleNodeMonitor(
        hass,
        entry_id=entry.entry_id,
        stale_after=options.stale_after_days * DAY,
        clock=now,
        known_nodes=lambda: nodes,
        last_seen=last_seen,
        node_name=nodes.node_name,
    )
    firmware = FirmwareUpdates(
        hass,
        home_id=home_id,
        bundle_path=options.firmware_path,
        max_parallel=options.max_parallel_updates,
        clock=now,
        updates=updates,
        firmware_of=lambda node_id: nodes[node_id].firmware if node_id in nodes else None,
        is_online=availability.node_online,
        node_name=nodes.node_name,
        spawn=spawn,
    )
    hub = HomeSyncHub(
        hass,
        home_id=home_id,
        updates=updates,
        nodes=nodes,
        availability=availability,
        outputs=outputs,
        control=control,
        schedule_save=storage.schedule_save,
        messages=stats.messages,
        on_ota_response=firmware.handle_response,
    )
    return HomeSyncRuntimeData(
        home_id=home_id,
        options=options,
        updates=updates,
        nodes=nodes,
        outputs=outputs,
        availability=availability,
        control=control,
        storage=storage,
        stale=stale,
        stats=stats,
        hub=hub,
        announcement=HubAnnouncement(hass, home_id),
        firmware=firmware,
    )
