"""Refresh tests/data/rancher/allowed_differences.txt from what the server shows today.

Runs the conformance comparison against an in-process server with a throwaway data dir, for
/v1 and /v2-beta, then rewrites the allowed list: entries that still occur keep their reason,
entries that no longer occur are dropped, and new differences get the first reason from
``REASONS`` that matches them (review those before committing). ``--check`` only prints what
would change and exits 1 if anything would.

    .venv/bin/python scripts/refresh_conformance.py [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from server.app import create_app  # noqa: E402
from tests.api.conformance import (  # noqa: E402
    ALLOWED_FILE,
    VERSIONS,
    Allowed,
    group_of,
    load_allowed,
    render_allowed,
    served_differences,
)
from tests.conftest import ADMIN, make_settings  # noqa: E402

HEADER = """\
# Differences from Rancher 1.6 that tests/api/test_conformance.py tolerates, grouped by type.
# One entry a line: "<version> <type> <aspect>: <detail> | <reason>".
# "kept:" marks a difference Corral keeps on purpose (docs/compatibility.md says why);
# "pending:" marks a gap that is to close; delete its line when the fix lands (the test
# fails on an entry that no longer occurs). Regenerate with
#   .venv/bin/python scripts/refresh_conformance.py
"""

EMBEDDED_TYPES = "(instanceHealthCheck|logConfig|restartPolicy|ulimit|mountEntry|dockerBuild|" \
    "secretReference|blkioDeviceOption|instanceLink)"
EMBEDDED_INPUTS = "(containerExec|containerLogs|containerProxy|instanceStop|hostAccess|" \
    "setLabelsInput|blkioDeviceOption|logConfig|restartPolicy|dockerBuild)"
INTERNAL_PROCESSES = "(create|restore|error|allocate|deallocate|updatehealthy|" \
    "updatereinitializing|updateunhealthy|delete)"
MACHINE_FIELDS = "(amazonec2Config|azureConfig|digitaloceanConfig|packetConfig|driver|" \
    "engine\\w+|authCertificateAuthority|authKey|dockerVersion|hostTemplateId)"

# First match wins. Keep "kept:" reasons in step with docs/compatibility.md.
REASONS: list[tuple[str, str]] = [
    (r" field (type|baseType): extra$",
     "kept: Corral declares the type and baseType every resource carries; Rancher does not"),
    (r" field \w+TS: extra$",
     "kept: Corral declares the millisecond twin of each date it renders; Rancher does not"),
    (r" field id\.type: rancher=int corral=string$",
     "kept: ids are strings like 1i5 on the wire; Rancher's schema shows its database column"),
    (r" field (id|uuid|kind)\.nullable: rancher=true corral=false$",
     "kept: every resource always has an id, uuid and kind, so Corral declares them not nullable"),
    (rf" action {INTERNAL_PROCESSES}: missing$",
     "kept: an internal process Rancher's schema lists but never offers; Corral omits it"),
    (r" action \w+\.output: rancher=(credential|instance|account|storagePool) corral=",
     "kept: Corral names the concrete type an action returns; Rancher names its base type"),
    (r" hostInspection type: not in Rancher$",
     "kept: the output of Corral's host inspect action, which Rancher does not have"),
    (r" host action inspect: extra$",
     "kept: Corral's own action that shows what the agent reports about the host's engine"),
    (r" registrationToken field installCommand: extra$",
     "kept: Corral's one-line install command for its own agent"),
    (r" registrationToken field image: missing$",
     "kept: Corral's agent is a wheel the server ships, not a rancher/agent image"),
    (rf" host field {MACHINE_FIELDS}",
     "kept: Corral does not provision hosts with docker-machine"),
    (r" host action provision: missing$",
     "kept: Corral does not provision hosts with docker-machine"),
    (r" registrationToken resourceMethods: ",
     "kept: Corral lets a token be deactivated and removed through PUT and DELETE as well"),
    (rf" {EMBEDDED_INPUTS} (collectionMethods|resourceMethods): rancher=\[[A-Z,]+\] corral=\[\]$",
     "kept: action inputs and outputs have no collection; Rancher's methods lead nowhere"),
    (r" type: not served$", "pending: the type is not served yet"),
    (r" container action (addlabel|removelabel): extra$",
     "pending: cattle dropped this action in 2015 (db5655811); Rancher 1.6 does not offer it"),
    (r"^v2-beta container action setlabels: extra$",
     "pending: Rancher 1.6 offers setlabels on /v1 only"),
    (r" (addLabelInput|removeLabelInput) type: not in Rancher$",
     "pending: cattle's ACLs name it, but Rancher 1.6's v1 schemas and go-rancher v2 lack it"),
    (r" hostStats type: not in Rancher$",
     "pending: Rancher answers its stats links with statsAccess; Corral names its own type"),
    (r" (nic|instanceHostMap) type: not in Rancher$",
     "pending: Rancher shows this internal type to no role compared here; hide or document it"),
    (r" type: not in Rancher$", "pending: a type Rancher 1.6 does not serve; hide or document it"),
    (r" pluralName: ", "pending: the collection's name differs from Rancher's"),
    (r" baseType: ", "pending: the base type differs from Rancher's"),
    (r" field state\.options: ", "pending: Corral's lifecycle lacks some of Rancher's states"),
    (rf" field \w+\.type: rancher={EMBEDDED_TYPES} corral=json$",
     "pending: Corral types this embedded object as json where Rancher names its schema"),
    (rf" field \w+\.type: rancher=array\[{EMBEDDED_TYPES}\] corral=json$",
     "pending: Corral types this list of embedded objects as json where Rancher names its schema"),
    (r" field \w+: missing$", "pending: the field is not served yet"),
    (r" field \w+: extra$", "pending: a field Rancher's schema lacks; rename, drop or document it"),
    (r" field \w+\.(create|update): ", "pending: the create/update flag differs from Rancher's"),
    (r" field \w+\.\w+: ", "pending: the field's attribute differs from Rancher's"),
    (r" action \w+: missing$", "pending: the action is not served yet"),
    (r" action \w+: extra$", "pending: an action Rancher does not have on this type"),
    (r" action \w+\.(input|output): ", "pending: the action's input or output type differs"),
    (r" link \w+: missing$", "pending: the link is not served yet"),
    (r" filter accountId: missing$", "pending: collections cannot be filtered by accountId yet"),
    (r" filter \w+: missing$", "pending: the collection cannot be filtered by this field yet"),
    (r" filter \w+: extra$", "pending: a filter Rancher does not offer on this collection"),
    (r" filter \w+\.modifiers: ", "pending: the filter's modifiers differ from Rancher's"),
    (r" link \w+: extra$", "pending: a link Rancher does not have on this type"),
    (r"Methods: ", "pending: the HTTP methods differ from Rancher's"),
    (r"", "pending: differs from Rancher 1.6"),
]


def reason_for(difference: str) -> str:
    return next(reason for pattern, reason in REASONS if re.search(pattern, difference))


async def current_differences() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(make_settings(Path(tmp) / "data"))
        async with TestClient(TestServer(app)) as client:
            found: list[str] = []
            for version in VERSIONS:
                found.extend(await served_differences(client, version, ADMIN))
            return found


def refreshed(found: list[str], existing: list[Allowed]) -> list[Allowed]:
    reasons = {entry.difference: entry.reason for entry in existing}
    return [Allowed(d, reasons.get(d) or reason_for(d), group_of(d)) for d in found]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print changes, write nothing")
    args = parser.parse_args()
    existing = load_allowed() if ALLOWED_FILE.exists() else []
    entries = refreshed(asyncio.run(current_differences()), existing)
    old = {e.difference for e in existing}
    new = {e.difference for e in entries}
    for difference in sorted(new - old):
        print(f"+ {difference}")
    for difference in sorted(old - new):
        print(f"- {difference}")
    if args.check:
        return 1 if old != new else 0
    ALLOWED_FILE.write_text(render_allowed(entries, HEADER))
    print(f"{ALLOWED_FILE.relative_to(ROOT)}: {len(entries)} entries "
          f"({len(new - old)} added, {len(old - new)} removed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
