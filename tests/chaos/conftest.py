"""The chaos tier uses the real-gateway fixtures."""

from tests.gateway.conftest import gateway, gateway_factory, gateway_install, node_factory  # noqa: F401
