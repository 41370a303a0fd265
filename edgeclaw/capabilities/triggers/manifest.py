"""What the triggers capability declares: no commands of its own (it uses the node's)."""

from edgeclaw.capabilities.base import CapabilityManifest

MANIFEST = CapabilityManifest(name="triggers", caps=(), commands=())
