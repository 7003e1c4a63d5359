"""One Prefect server for the whole test session, instead of one per flow run.

Without ``$PREFECT_API_URL``, every ``alignpipe run``, ``simulate`` and ``personalize`` first
starts Prefect's temporary server: 7 to 12 s on two cores, paid some twenty times by the
end-to-end tests, none of which is about that start (the shared trained project's first run
keeps it, as a newcomer's ``make run`` has it). A module whose commands may share one asks for
``on_shared_prefect``; in-process flows see the same server.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def prefect_api_url() -> str:
    """A Prefect server of this session (a temporary database), for in-process flows and, by URL, for commands."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):   # PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="module")
def on_shared_prefect(prefect_api_url) -> str:
    """``$PREFECT_API_URL`` names the session's server while the module runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", prefect_api_url)
        yield prefect_api_url
