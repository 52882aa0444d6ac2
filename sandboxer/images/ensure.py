"""Docker's pull policy: make sure a named image is in the store before it is used.

Kept apart from :mod:`sandboxer.images.registry` so that ``run IMAGE`` on an
image already in the store never imports httpx (~85 ms).
"""

from __future__ import annotations

from ..errors import UsageError
from .reference import parse_reference
from .store import Store, StoreError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .progress import Progress

__all__ = ["ensure_image"]


def ensure_image(name: str, when: str = "missing", *, platform: str | None = None,
                 tls_verify: bool | None = None, progress: Progress | None = None,
                 store: Store | None = None) -> None:
    """Docker's ``--pull`` policy: ``missing`` pulls a name the store lacks, ``always`` pulls, ``never`` doesn't.

    Concurrent callers (xdist workers starting the same image) pull once: the
    second waits on the name's lock and then finds it in the store.
    """
    if when not in ("missing", "never", "always"):
        raise UsageError(f"invalid pull policy {when!r}", hint="use missing, never or always")
    store = store or Store()
    if when == "never" or (when == "missing" and _in_store(store, name)):
        return
    ref = parse_reference(name)
    with store.lock(f"pull-{ref.familiar.replace('/', '_')}", transient=True):
        if when == "missing" and _in_store(store, name):
            return  # pulled by whoever held the lock
        from .registry import RegistryError, pull  # httpx: only when a pull really happens

        try:
            pull(ref, store, platform=platform, tls_verify=tls_verify, progress=progress)
        except RegistryError as e:
            raise StoreError(f"no such image: {ref.familiar}, and pulling it failed: {e}", hint=e.hint) from None


def _in_store(store: Store, name: str) -> bool:
    try:
        store.lookup(name)
        return True
    except StoreError:
        return False
