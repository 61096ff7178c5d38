"""Vault benchmark: seal and open throughput beside raw AES-256-GCM, in one run.

Not a test (pytest does not collect ``bench_*.py``). Run from the repository root:

    .venv/bin/python -m tests.benchmarks.bench_vault [--seconds 0.5]

Measured at 256 B, 4 KiB, 64 KiB and 1 MiB:

* ``raw AESGCM``: one ``AESGCM.encrypt`` / ``decrypt`` with a fixed key (the floor).
* ``vault record``: the vault's own envelope (fresh data key, wrap under the tenant key,
  bound context), in-process (``services.vault.domain.envelope``).
* ``sealed envelope``: the client-side HPKE envelope (``shared.sealed_envelope``), in-process.
* ``HTTP seal/open``: the vault app over real HTTP on loopback (uvicorn in a thread, SQLite
  in a temporary folder, service credential and router-signed grant per request, audit
  record per call); payloads above the API's 64 KiB limit are skipped there.

Figures are operations per second and MB/s of payload; they depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import uvicorn
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.vault.app import create_app
from services.vault.db.migrate import upgrade
from services.vault.domain import envelope
from services.vault.settings import VaultSettings
from shared import sealed_envelope
from shared.service_auth import ServiceIdentity, ensure_service_keys

SIZES = (256, 4 * 1024, 64 * 1024, 1024 * 1024)
# The API caps confidential objects at 64 KiB; larger payloads are measured in-process only.
HTTP_MAX = 64 * 1024


def rate(action: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``action``, over at least ``seconds`` (and at least 3 calls)."""
    count, start = 0, time.perf_counter()
    while True:
        action()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= 3:
            return count / elapsed


def row(name: str, size: int, seal: float, opened: float) -> str:
    mb = size / 1e6
    return (
        f"| {name} | {size:>8} | {seal:>10,.0f} | {seal * mb:>8.1f} "
        f"| {opened:>10,.0f} | {opened * mb:>8.1f} |"
    )


def _bind(function: Callable[..., object], *args: object) -> Callable[[], object]:
    """``function`` with its arguments fixed now (not late-bound like a loop's closure)."""
    return lambda: function(*args)


def _seal_envelope(payload: bytes, public: X25519PublicKey) -> object:
    return sealed_envelope.seal(payload, public_key=public, tenant_id="t", job_ref="j")


def in_process(seconds: float) -> list[str]:
    lines = []
    aes_key = AESGCM.generate_key(bit_length=256)
    tenant = envelope.TenantKey(tenant_id="t", version=1, material=envelope.new_key())
    recipient = X25519PrivateKey.generate()
    public = recipient.public_key()
    for size in SIZES:
        payload = os.urandom(size)
        aead, nonce = AESGCM(aes_key), os.urandom(12)
        sealed = aead.encrypt(nonce, payload, b"aad")
        lines.append(
            row(
                "raw AESGCM",
                size,
                rate(_bind(aead.encrypt, nonce, payload, b"aad"), seconds),
                rate(_bind(aead.decrypt, nonce, sealed, b"aad"), seconds),
            )
        )
        data = base64.b64encode(payload[: size * 3 // 4]).decode()  # JSON string of ~size bytes
        context = envelope.RecordContext(
            tenant_id="t", job_id="j", purpose="job", record_id="r", key_version=1
        )
        record = envelope.seal_record(tenant, context, data)
        lines.append(
            row(
                "vault record",
                size,
                rate(_bind(envelope.seal_record, tenant, context, data), seconds),
                rate(_bind(envelope.open_record, tenant, context, record), seconds),
            )
        )
        box = sealed_envelope.seal(payload, public_key=public, tenant_id="t", job_ref="j")
        lines.append(
            row(
                "sealed envelope",
                size,
                rate(_bind(_seal_envelope, payload, public), seconds),
                rate(_bind(sealed_envelope.open_envelope, box, recipient), seconds),
            )
        )
    return lines


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def over_http(seconds: float) -> list[str]:
    folder = Path(tempfile.mkdtemp(prefix="bench-vault-"))
    keys = folder / "service-keys"
    ensure_service_keys(keys)
    url = f"sqlite+aiosqlite:///{folder / 'vault.db'}"
    upgrade(url)
    settings = VaultSettings(database_url=url, data_dir=folder, service_keys_dir=keys)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    gateway = ServiceIdentity.load(name="gateway", keys_dir=keys, peers=())
    router = ServiceIdentity.load(name="router", keys_dir=keys, peers=())
    try:
        return asyncio.run(_http_rows(f"http://127.0.0.1:{port}", gateway, router, seconds))
    finally:
        server.should_exit = True
        thread.join()


async def _http_rows(
    base: str, gateway: ServiceIdentity, router: ServiceIdentity, seconds: float
) -> list[str]:
    lines = []
    tenant = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for size in SIZES:
            if size > HTTP_MAX:
                lines.append(
                    f"| HTTP seal/open | {size:>8} | (above the API's 64 KiB limit) | | | |"
                )
                continue
            data = "x" * (size - 2)  # a JSON string of ``size`` bytes
            refs: list[tuple[str, str]] = []

            async def seal(payload: str = data, made: list[tuple[str, str]] = refs) -> None:
                job = str(uuid.uuid4())
                auth = {"Authorization": f"Bearer {gateway.credential_for('vault')}"}
                response = await client.post(
                    "/internal/v1/records",
                    json={"tenant_id": tenant, "job_id": job, "purpose": "job", "data": payload},
                    headers=auth,
                )
                response.raise_for_status()
                made.append((job, response.json()["ref"]))

            async def open_one(made: list[tuple[str, str]] = refs) -> None:
                job, ref = made[len(made) // 2]
                grant = router.sign(
                    audience="vault",
                    typ="grant",
                    ttl_seconds=60,
                    claims={
                        "action": "open",
                        "tenant_id": tenant,
                        "job_id": job,
                        "purpose": "job",
                        "ref": ref,
                        "subject": f"member:{uuid.uuid4()}",
                        "require_e2e": False,
                    },
                )
                auth = {"Authorization": f"Bearer {gateway.credential_for('vault')}"}
                response = await client.post(
                    "/internal/v1/records/open", json={"grant": grant}, headers=auth
                )
                response.raise_for_status()

            lines.append(
                row(
                    "HTTP seal/open",
                    size,
                    await _arate(seal, seconds),
                    await _arate(open_one, seconds),
                )
            )
    return lines


async def _arate(action: Callable[[], Awaitable[None]], seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while True:
        await action()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= 3:
            return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    args = parser.parse_args()
    print("| what | bytes | seal ops/s | seal MB/s | open ops/s | open MB/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for line in in_process(args.seconds) + over_http(args.seconds):
        print(line)


if __name__ == "__main__":
    main()
