"""Code shared by the Corral server and agent: wire protocol, instruction payloads and the
container contract (``instructions``, ``containers``), error codes, ids.

Everything here is pure: no I/O, no asyncio, aiohttp, websockets or docker imports.
"""
