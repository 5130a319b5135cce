"""Service discovery DNS on every agent (Rancher's rancher-dns): :mod:`resolve` decides answers
from the table ``dns.apply`` sends (pure), :mod:`server` speaks DNS on UDP and TCP, and
:mod:`manager` keeps the latest table and starts the responder once its address exists."""
