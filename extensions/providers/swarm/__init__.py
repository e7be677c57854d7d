"""provider.swarm: publishes Docker Swarm services that carry the interlook labels."""

from extensions.providers.swarm.config import SwarmConfig
from extensions.providers.swarm.provider import SwarmProvider

__all__ = ["SwarmConfig", "SwarmProvider"]
