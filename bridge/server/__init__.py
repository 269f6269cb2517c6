"""The board side: the asyncio server, how requests reach the buses, and who may do what.

Nothing here imports the client wing; what both sides share is in ``protocol/``.
"""

from .framing import READ_BUFFER
from .scheduling import BoardLike
from .server import Server, serve
from .settings import LimitSettings, ServerPolicy

__all__ = ["READ_BUFFER", "BoardLike", "LimitSettings", "Server", "ServerPolicy", "serve"]
