"""alignpipe's library: pure functions for every stage. Never imports Prefect.

Importing the package applies the project's quiet, offline-safe defaults (see
``components.environment``) before any heavy library reads its settings.
"""

from components.environment import apply_defaults

apply_defaults()
