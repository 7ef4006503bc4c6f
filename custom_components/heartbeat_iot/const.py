"""Constants for the heartbeat_iot integration."""

from __future__ import annotations

from typing import Final

from homeassistant.const import Platform

DOMAIN: Final = "heartbeat_iot"
MANUFACTURER: Final = "HomeSync"

CONF_HOME_ID: Final = "home_id"

# Options (all have defaults, so an entry without options behaves like the defaults).
CONF_MAX_NODES: Final = "max_nodes"
CONF_MAX_METRICS: Final = "max_metrics"
CONF_HEARTBEAT_INTERVAL: Final = "heartbeat_interval"
CONF_TIMEOUT_MULTIPLIER: Final = "timeout_multiplier"
CONF_MIN_TIMEOUT: Final = "min_timeout"
CONF_FLAP_TRANSITIONS: Final = "flap_transitions"
CONF_FLAP_WINDOW: Final = "flap_window"
CONF_OFFLINE_RATIO: Final = "offline_ratio_threshold"
CONF_COMMAND_TIMEOUT: Final = "command_timeout"
CONF_COMMAND_RETRIES: Final = "command_retries"
# Set TCP_NODELAY on Home Assistant's MQTT connection (tcp_nodelay.py).
CONF_TCP_NODELAY: Final = "tcp_nodelay"
CONF_STALE_DAYS: Final = "stale_after_days"
CONF_MAX_PARALLEL_UPDATES: Final = "max_parallel_updates"
CONF_FIRMWARE_PATH: Final = "firmware_path"  # a bundle file or a folder of them (optional)

DEFAULT_MAX_NODES: Final = 256
DEFAULT_MAX_METRICS: Final = 32  # per node
DEFAULT_HEARTBEAT_INTERVAL: Final = 30
DEFAULT_TIMEOUT_MULTIPLIER: Final = 3.0
DEFAULT_MIN_TIMEOUT: Final = 30
DEFAULT_FLAP_TRANSITIONS: Final = 5
DEFAULT_FLAP_WINDOW: Final = 600
DEFAULT_OFFLINE_RATIO: Final = 10.0
DEFAULT_COMMAND_TIMEOUT: Final = 5.0
DEFAULT_COMMAND_RETRIES: Final = 3
DEFAULT_TCP_NODELAY: Final = True
DEFAULT_STALE_DAYS: Final = 7
DEFAULT_MAX_PARALLEL_UPDATES: Final = 2

DEFAULT_OPTIONS: Final[dict[str, int | float]] = {
    CONF_MAX_NODES: DEFAULT_MAX_NODES,
    CONF_MAX_METRICS: DEFAULT_MAX_METRICS,
    CONF_HEARTBEAT_INTERVAL: DEFAULT_HEARTBEAT_INTERVAL,
    CONF_TIMEOUT_MULTIPLIER: DEFAULT_TIMEOUT_MULTIPLIER,
    CONF_MIN_TIMEOUT: DEFAULT_MIN_TIMEOUT,
    CONF_FLAP_TRANSITIONS: DEFAULT_FLAP_TRANSITIONS,
    CONF_FLAP_WINDOW: DEFAULT_FLAP_WINDOW,
    CONF_OFFLINE_RATIO: DEFAULT_OFFLINE_RATIO,
    CONF_COMMAND_TIMEOUT: DEFAULT_COMMAND_TIMEOUT,
    CONF_COMMAND_RETRIES: DEFAULT_COMMAND_RETRIES,
    CONF_TCP_NODELAY: DEFAULT_TCP_NODELAY,
    CONF_STALE_DAYS: DEFAULT_STALE_DAYS,
    CONF_MAX_PARALLEL_UPDATES: DEFAULT_MAX_PARALLEL_UPDATES,
}

PLATFORMS: Final = [
    Platform.BINARY_SENSOR,
    Platform.EVENT,
    Platform.SENSOR,
    Platform.SWITCH,
    Platform.UPDATE,
]

STORAGE_VERSION: Final = 1
# Debounce for persisting node metadata: bursts of discovery write once.
STORAGE_SAVE_DELAY: Final = 10

# Change keys of updates.Updates, the one way entities hear about changes (see
# docs/architecture.md): listeners subscribe to (node_id, key) and read the new value from its
# owner when notified. Every metric key is a key too (nodes.NodeRegistry notifies it).
HUB: Final = ""  # the "node id" of the home's own (fleet) entities; node ids are never empty
KEY_STATUS: Final = "status"  # availability / health (also announced for HUB)
KEY_FIRMWARE: Final = "firmware"
KEY_LAST_SEEN: Final = "last_seen"  # every live message
KEY_RELAY: Final = "relay"
KEY_LED: Final = "led"
KEY_EVENT: Final = "node_event"  # availability.AvailabilityMonitor.last_event(node_id) changed
KEY_UPDATE: Final = "firmware_update"  # firmware.FirmwareUpdates.job(node_id) changed
KEY_BUNDLE: Final = "firmware_bundle"  # announced for HUB: FirmwareUpdates.bundle changed
# Announced for HUB: read nodes.NodeRegistry.newest_node / .newest_metric.
KEY_NODE_ADDED: Final = "node_added"
KEY_METRIC_ADDED: Final = "metric_added"
KEY_QUEUED_INTENTS: Final = "queued_intents"  # per node: its intents in the offline queue
# Per-home statistics (sensors on the hub device, each notified on (HUB, key)).
STAT_COMMANDS_SENT: Final = "commands_sent"
STAT_COMMANDS_CONFIRMED: Final = "commands_confirmed"
STAT_COMMANDS_FAILED: Final = "commands_failed"
STAT_COMMANDS_PENDING: Final = "commands_pending"
STAT_INTENTS_QUEUED: Final = "intents_queued"
STAT_MESSAGES_PER_MINUTE: Final = "messages_per_minute"
STAT_MESSAGES_REJECTED: Final = "messages_rejected"
# Seconds between samples of the message counters (the only per-message numbers shown).
STATS_INTERVAL: Final = 60

# Bus events besides heartbeat_iot_node_<online|offline|rebooted|flapping>
# (see availability.event_type).
EVENT_COMMAND_COMPLETED: Final = f"{DOMAIN}_command_completed"
EVENT_COMMAND_FAILED: Final = f"{DOMAIN}_command_failed"

# Issue ids in the repair registry.
ISSUE_MAX_NODES: Final = "max_nodes_exceeded"
ISSUE_MAX_METRICS: Final = "max_metrics_exceeded"
ISSUE_STALE_NODE: Final = "stale_node"
