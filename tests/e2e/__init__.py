"""End-to-end tests: real firmware node, real mosquitto, Home Assistant's real MQTT client."""
