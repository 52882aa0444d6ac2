"""pytest-sandboxer: run pytest tests in fresh rootless sandboxes.

``@pytest.mark.sandbox`` (or ``--sandbox-all``) runs a test in its own
sandbox; the ``sandbox`` and ``sandbox_factory`` fixtures give a test
sandboxes to run commands in.  See :mod:`pytest_sandboxer.plugin`.
"""

from .handle import SandboxHandle

__all__ = ["SandboxHandle"]
