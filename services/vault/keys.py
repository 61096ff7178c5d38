"""Where the root key comes from: the ``RootKeyProvider`` protocol and its two providers.

A provider answers two questions at start-up: what is the root key, or is there none (the vault
then runs *sealed*: it answers health checks and audit reads, and 503 on every crypto endpoint);
and which previous root keys it still knows during a root-key rotation (they only unwrap; see
:class:`services.vault.domain.envelope.RootKeyRing` and docs/operations.md). A later issue can add
providers (a cloud KMS, an HSM, unsealing by operators) behind the same protocol without touching
the rest of the vault: ``load`` gives the current key, ``load_previous`` the unwrap-only ones.

* :class:`EnvRootKeyProvider`: ``TASKROUTE_VAULT_ROOT_KEY``, base64 of 32 bytes.
* :class:`FileRootKeyProvider`: 32 raw bytes in a file. When generation is allowed (local mode)
  and the file is missing, it creates it with mode 0600 atomically: the key is written to a
  temporary file opened with ``O_CREAT | O_EXCL`` and mode 0600, flushed to disk, then
  hard-linked to the final name, which fails if another process won the race; the loser reads
  the winner's complete key. No process ever reads a half-written key.
"""

from __future__ import annotations

import logging
import os
import stat
import uuid
from pathlib import Path
from typing import Protocol

from services.vault.domain.envelope import KEY_BYTES, RootKey, RootKeyRing
from services.vault.settings import VaultSettings

logger = logging.getLogger("taskroute.vault.keys")


class RootKeyProvider(Protocol):
    """A source of the root key. ``load`` returns None when there is no key (vault sealed)."""

    @property
    def source(self) -> str:
        """A name for logs and errors; never the key itself."""
        ...

    def load(self) -> RootKey | None: ...

    def load_previous(self) -> tuple[RootKey, ...]:
        """Root keys that only unwrap (a rotation in progress); empty when none."""
        ...


def _read_key_file(path: Path) -> RootKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("root key file is readable by other users", extra={"path": str(path)})
    material = path.read_bytes()
    if len(material) != KEY_BYTES:
        raise RuntimeError(f"root key file {path} must hold exactly {KEY_BYTES} bytes")
    return RootKey(material)


class _PreviousKeys:
    """Previous root keys given as values (environment) and as files, read at load time."""

    def __init__(self, materials: tuple[bytes, ...], files: tuple[Path, ...]) -> None:
        self._materials = materials
        self._files = files

    def load_previous(self) -> tuple[RootKey, ...]:
        keys = [RootKey(material) for material in self._materials]
        for path in self._files:
            if not path.exists():
                # Configured explicitly: a missing file is a deployment fault, not "no key".
                raise RuntimeError(f"previous root key file {path} does not exist")
            keys.append(_read_key_file(path))
        return tuple(keys)


class EnvRootKeyProvider(_PreviousKeys):
    def __init__(
        self,
        material: bytes,
        *,
        previous: tuple[bytes, ...] = (),
        previous_files: tuple[Path, ...] = (),
    ) -> None:
        super().__init__(previous, previous_files)
        self._material = material

    def __repr__(self) -> str:
        return "EnvRootKeyProvider(***)"

    @property
    def source(self) -> str:
        return "environment"

    def load(self) -> RootKey:
        return RootKey(self._material)


class FileRootKeyProvider(_PreviousKeys):
    def __init__(
        self,
        path: Path,
        *,
        generate: bool,
        previous: tuple[bytes, ...] = (),
        previous_files: tuple[Path, ...] = (),
    ) -> None:
        super().__init__(previous, previous_files)
        self.path = path
        self.generate = generate

    def __repr__(self) -> str:
        return f"FileRootKeyProvider(path={self.path}, generate={self.generate})"

    @property
    def source(self) -> str:
        return f"file:{self.path}"

    def load(self) -> RootKey | None:
        if not self.path.exists():
            if not self.generate:
                return None
            self._create()
        return _read_key_file(self.path)

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(os.urandom(KEY_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, self.path)
                logger.info("generated a new root key file", extra={"path": str(self.path)})
            except FileExistsError:
                pass  # another process created it first: use theirs
        finally:
            temporary.unlink(missing_ok=True)


def root_key_provider(settings: VaultSettings) -> RootKeyProvider:
    """The provider the settings select: the environment key if set, else the key file.

    The previous root keys (``TASKROUTE_VAULT_PREVIOUS_ROOT_KEYS`` and ``..._FILES``) apply to
    either provider.
    """
    previous = tuple(settings.previous_root_key_bytes())
    previous_files = tuple(settings.previous_root_key_paths())
    material = settings.root_key_bytes()
    if material is not None:
        return EnvRootKeyProvider(material, previous=previous, previous_files=previous_files)
    return FileRootKeyProvider(
        settings.resolved_root_key_file(),
        generate=settings.generate_root_key,
        previous=previous,
        previous_files=previous_files,
    )


def load_root_key_ring(provider: RootKeyProvider) -> RootKeyRing | None:
    """The current root key and the previous ones the provider knows; None when sealed."""
    current = provider.load()
    if current is None:
        return None
    return RootKeyRing(current=current, previous=provider.load_previous())
