"""Offline stand-ins for hassfest and the HACS action, plus our own quality-scale check.

hassfest skips quality_scale.yaml for custom integrations and neither hassfest nor HACS
can run without network here, so the rules we rely on are checked in this file.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
import re
import string
import subprocess
from typing import Any

from awesomeversion import AwesomeVersion
from homeassistant.helpers import config_validation as cv
import pytest
import voluptuous as vol
import yaml

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "custom_components" / "heartbeat_iot"
MANIFEST = json.loads((PACKAGE / "manifest.json").read_text())
STRINGS = json.loads((PACKAGE / "strings.json").read_text())

# The 52 rules of the integration quality scale in Home Assistant 2025.4, by tier.
RULES = {
    "bronze": [
        "action-setup",
        "appropriate-polling",
        "brands",
        "common-modules",
        "config-flow",
        "config-flow-test-coverage",
        "dependency-transparency",
        "docs-actions",
        "docs-high-level-description",
        "docs-installation-instructions",
        "docs-removal-instructions",
        "entity-event-setup",
        "entity-unique-id",
        "has-entity-name",
        "runtime-data",
        "test-before-configure",
        "test-before-setup",
        "unique-config-entry",
    ],
    "silver": [
        "action-exceptions",
        "config-entry-unloading",
        "docs-configuration-parameters",
        "docs-installation-parameters",
        "entity-unavailable",
        "integration-owner",
        "log-when-unavailable",
        "parallel-updates",
        "reauthentication-flow",
        "test-coverage",
    ],
    "gold": [
        "devices",
        "diagnostics",
        "discovery",
        "discovery-update-info",
        "docs-data-update",
        "docs-examples",
        "docs-known-limitations",
        "docs-supported-devices",
        "docs-supported-functions",
        "docs-troubleshooting",
        "docs-use-cases",
        "dynamic-devices",
        "entity-category",
        "entity-device-class",
        "entity-disabled-by-default",
        "entity-translations",
        "exception-translations",
        "icon-translations",
        "reconfiguration-flow",
        "repair-issues",
        "stale-devices",
    ],
    "platinum": ["async-dependency", "inject-websession", "strict-typing"],
}
ALL_RULES = [rule for tier in RULES.values() for rule in tier]


def test_exactly_one_manifest_in_repo() -> None:
    """hassfest's action validates every manifest.json it finds as an integration."""
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    manifests = [path for path in tracked if Path(path).name == "manifest.json"]
    assert manifests == ["custom_components/heartbeat_iot/manifest.json"]


def test_manifest_hassfest_rules() -> None:
    keys = list(MANIFEST)
    assert keys[:2] == ["domain", "name"]
    assert keys[2:] == sorted(keys[2:]), "hassfest: domain, name, then alphabetical"
    allowed = {
        "domain",
        "name",
        "codeowners",
        "config_flow",
        "dependencies",
        "after_dependencies",
        "documentation",
        "integration_type",
        "iot_class",
        "issue_tracker",
        "loggers",
        "mqtt",
        "quality_scale",
        "requirements",
        "single_config_entry",
        "version",
    }
    assert set(keys) <= allowed
    assert MANIFEST["domain"] == PACKAGE.name
    assert MANIFEST["documentation"].startswith("https://")
    assert not MANIFEST["documentation"].startswith("https://www.home-assistant.io/integrations")
    assert MANIFEST["iot_class"] == "local_push"
    assert MANIFEST["integration_type"] == "hub"
    assert MANIFEST["config_flow"] is True
    assert MANIFEST["dependencies"] == ["http", "mqtt"]  # http: the firmware download view
    assert MANIFEST["mqtt"] == ["homesync/+/nodes/+/status/online"]
    assert AwesomeVersion(MANIFEST["version"]).valid


def test_manifest_hacs_rules() -> None:
    for key in ("codeowners", "documentation", "domain", "issue_tracker", "name", "version"):
        assert MANIFEST.get(key), key
    assert all(owner.startswith("@") for owner in MANIFEST["codeowners"])


def test_hacs_json() -> None:
    hacs = json.loads((ROOT / "hacs.json").read_text())
    allowed = {
        "name",
        "content_in_root",
        "zip_release",
        "filename",
        "render_readme",
        "hide_default_branch",
        "country",
        "homeassistant",
        "hacs",
        "persistent_directory",
    }
    assert set(hacs) <= allowed
    assert hacs["name"]
    assert AwesomeVersion(hacs["homeassistant"]) <= AwesomeVersion("2025.4.4")
    assert hacs["render_readme"] is True


def test_translations_match_strings() -> None:
    """Custom integrations load translations/en.json only; strings.json is its source."""
    assert json.loads((PACKAGE / "translations" / "en.json").read_text()) == STRINGS


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in _walk(value, f"{path}.{key}")]
    return [(path, node)]


# hassfest's translation rules (script/hassfest/translations.py): the value validator runs HA's
# own cv.string_with_no_html (regex `<[a-z].*?>`: the frontend would swallow such text as a tag)
# and rejects single-quoted or non-identifier placeholders, combined references, padding and URLs.
RE_TRANSLATION_KEY = re.compile(r"^(?!.+[_-]{2})(?![_-])[a-z0-9-_]+(?<![_-])$")
RE_COMBINED_REFERENCE = re.compile(r"(.+\[%)|(%\].+)")
RE_PLACEHOLDER_IN_SINGLE_QUOTES = re.compile(r"'{\w+}'")
RE_URL = re.compile(
    r"(((ftp|ftps|scp|http|https|mqtt|mqtts|socket|socks5):\/\/|www\.)"
    r"[a-z0-9]+([\-\.]{1}[a-z0-9]+)*\.[a-z]{2,5}(:[0-9]{1,5})?(\/.*)?)",
    re.IGNORECASE,
)


def hassfest_value_errors(value: Any) -> list[str]:
    """What hassfest's translation value validator would reject in `value`."""
    try:
        text = cv.string_with_no_html(value)
    except vol.Invalid as err:
        return [str(err)]
    errors = []
    if RE_PLACEHOLDER_IN_SINGLE_QUOTES.search(text):
        errors.append("placeholder inside single quotes")
    for _, field, _, _ in string.Formatter().parse(text):
        if field and not field.isidentifier():
            errors.append(f"placeholder {field!r} is not an identifier")
    if RE_COMBINED_REFERENCE.search(text):
        errors.append("combined translation reference")
    if text != text.strip():
        errors.append("leading or trailing spaces")
    if RE_URL.search(text):
        errors.append("URL (use a description placeholder)")
    return errors


@pytest.mark.parametrize(
    ("value", "rejected"),
    [
        ("Nodes publish under homesync/<home id>/nodes/.", True),
        ("Use <b>this</b>", True),
        ("Node '{node}' is offline", True),
        ("See https://example.com/x", True),
        (" padded", True),
        ("Homes seen on your broker: {seen}.", False),
        ("Offline ratio above 10 % (< 5 is fine)", False),
    ],
)
def test_hassfest_value_rules_are_the_real_ones(value: str, rejected: bool) -> None:
    """The checker itself: the bug that shipped (`<home id>`) must be caught."""
    assert bool(hassfest_value_errors(value)) is rejected


def test_strings_follow_hassfest_value_rules() -> None:
    for path, value in _walk(STRINGS):
        assert hassfest_value_errors(value) == [], path
        for key in path.strip(".").split("."):
            assert RE_TRANSLATION_KEY.match(key), path


def test_data_description_keys_exist_in_data() -> None:
    for section in ("config", "options"):
        for step in STRINGS[section]["step"].values():
            assert set(step.get("data_description", {})) <= set(step.get("data", {}))


def _string_constants(tree: ast.AST, keyword: str) -> set[str]:
    """String literals passed as `keyword=` or assigned to `_attr_<keyword>`."""
    found: set[str] = set()
    for node in ast.walk(tree):
        passed = isinstance(node, ast.keyword) and node.arg == keyword
        assigned = isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Attribute) and target.attr == f"_attr_{keyword}"
            for target in node.targets
        )
        value = getattr(node, "value", None) if passed or assigned else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            found.add(value.value)
    return found


def test_every_translation_key_used_in_code_exists() -> None:
    """phcc has no check_translations fixture; this is ours."""
    exceptions = set(STRINGS.get("exceptions", {}))
    issues = set(STRINGS.get("issues", {}))
    entity_keys = {key for platform in STRINGS["entity"].values() for key in platform}
    for source in PACKAGE.glob("*.py"):
        tree = ast.parse(source.read_text())
        for key in _string_constants(tree, "translation_key"):
            assert key in exceptions | issues | entity_keys, f"{source.name}: {key}"


def test_icons() -> None:
    icons = json.loads((PACKAGE / "icons.json").read_text())
    for path, value in _walk(icons):
        assert value.startswith("mdi:"), path
    for platform, keys in icons.get("entity", {}).items():
        assert set(keys) <= set(STRINGS["entity"].get(platform, {})), platform
    for service, value in icons.get("services", {}).items():
        assert set(value) <= {"service", "sections"}, service


def _frontend_icon_names() -> set[str]:
    """Every mdi icon the frontend that HA 2025.4.4 pins can draw (its own icon list)."""
    spec = importlib.util.find_spec("hass_frontend")
    missing = "home-assistant-frontend is not installed: ./scripts/setup --demo installs it"
    assert spec is not None, missing
    assert spec.origin is not None, missing
    icon_list = Path(spec.origin).parent / "static" / "mdi" / "iconList.json"
    return {icon["name"] for icon in json.loads(icon_list.read_text())}


def _icons_in_use() -> dict[str, str]:
    """`mdi:` names in icons.json, the integration's code and the blueprints, by where found."""
    found: dict[str, str] = {}
    sources = [*PACKAGE.rglob("*.json"), *PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.yaml")]
    sources += [*(ROOT / "blueprints").rglob("*.yaml")]
    for source in sources:
        for name in re.findall(r"mdi:([a-z0-9-]+)", source.read_text()):
            found.setdefault(name, str(source.relative_to(ROOT)))
    return found


def test_every_icon_exists_in_the_frontend() -> None:
    """A name the frontend does not know renders as a blank icon (mdi:alert-network did)."""
    known = _frontend_icon_names()
    in_use = _icons_in_use()
    assert "heart-pulse" in in_use
    missing = {name: where for name, where in in_use.items() if name not in known}
    assert missing == {}


QUALITY = yaml.safe_load((PACKAGE / "quality_scale.yaml").read_text())


def test_quality_scale_format() -> None:
    assert set(QUALITY) == {"rules"}
    assert set(QUALITY["rules"]) == set(ALL_RULES)
    for rule, value in QUALITY["rules"].items():
        if isinstance(value, str):
            assert value in {"done", "todo"}, rule
        else:
            assert set(value) <= {"status", "comment"}, rule
            assert value["status"] in {"done", "todo", "exempt"}, rule
            if value["status"] == "exempt":
                assert value.get("comment"), f"{rule}: exempt needs a comment"


def _status(rule: str) -> str:
    value = QUALITY["rules"][rule]
    return value if isinstance(value, str) else value["status"]


def test_declared_tier_is_met() -> None:
    tier = MANIFEST.get("quality_scale")
    if tier is None:
        return
    tiers = list(RULES)
    for lower in tiers[: tiers.index(tier) + 1]:
        for rule in RULES[lower]:
            assert _status(rule) in {"done", "exempt"}, rule


def _sources() -> dict[str, str]:
    return {path.name: path.read_text() for path in PACKAGE.glob("*.py")}


# Mechanical checks for the claims we can verify from the code itself.
CLAIM_CHECKS = {
    "runtime-data": lambda src: all("hass.data[DOMAIN]" not in text for text in src.values()),
    "config-flow": lambda src: MANIFEST["config_flow"] and "config_flow.py" in src,
    "diagnostics": lambda src: "async_get_config_entry_diagnostics" in src["diagnostics.py"],
    "reconfiguration-flow": lambda src: "async_step_reconfigure" in src["config_flow.py"],
    "integration-owner": lambda src: bool(MANIFEST["codeowners"]),
    "discovery": lambda src: (
        bool(MANIFEST.get("mqtt")) and "async_step_mqtt" in src["config_flow.py"]
    ),
    "common-modules": lambda src: "entity.py" in src,
    "stale-devices": lambda src: (
        "async_remove_config_entry_device" in src["__init__.py"]
        and "is_fixable=True" in src["stale.py"]
        and "async_create_fix_flow" in src["repairs.py"]
    ),
    "repair-issues": lambda src: "async_create_issue" in "".join(src.values()),
    "config-entry-unloading": lambda src: "async_unload_entry" in src["__init__.py"],
    "unique-config-entry": lambda src: "_abort_if_unique_id_configured" in src["config_flow.py"],
    "parallel-updates": lambda src: all(
        "PARALLEL_UPDATES" in text
        for name, text in src.items()
        if name in {"sensor.py", "binary_sensor.py", "switch.py", "event.py"}
    ),
    # As a class attribute, or as a plain property (entity.py: saves an instance slot, issue 14).
    "has-entity-name": lambda src: "_attr_has_entity_name = True" in src["entity.py"]
    or re.search(
        r"def has_entity_name\(self\) -> bool:\n(?:\s+\"\"\".*\"\"\"\n)?\s+return True\n",
        src["entity.py"],
    )
    is not None,
    "action-setup": lambda src: "services.py" not in src
    or "async_setup_services" in src["__init__.py"].split("async def async_setup_entry")[0],
}


@pytest.mark.parametrize("rule", sorted(CLAIM_CHECKS))
def test_done_claims_hold(rule: str) -> None:
    if _status(rule) == "done":
        assert CLAIM_CHECKS[rule](_sources()), f"quality_scale.yaml claims {rule}: done"
