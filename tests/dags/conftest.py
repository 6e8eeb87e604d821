"""The fixtures of the operations DAG tests (tests/dags/operations_support.py): the migration id, and the
second database where the hand-written reference schema is built (the engine tests' own fixture)."""

from tests.dags.operations_support import migration_id  # noqa: F401
from tests.engine.operations.conftest import reference_dsn  # noqa: F401
