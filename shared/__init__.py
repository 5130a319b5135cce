"""Code shared by the Corral server and agent: wire protocol, error codes, ids.

Everything here is pure: no I/O, no asyncio, aiohttp, websockets or docker imports.
"""
