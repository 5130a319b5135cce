"""Agent connections: registration, the websocket endpoint, sessions, the hub, instructions."""
