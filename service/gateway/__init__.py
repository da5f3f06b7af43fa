"""The gateway's aiohttp application."""
