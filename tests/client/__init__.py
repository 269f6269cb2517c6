"""The client wing: the asyncio, thread-backed and blocking clients over real TCP."""
