import pytest

# helpers.py holds assertion helpers: rewritten like a test's own asserts, a failure shows the values compared.
pytest.register_assert_rewrite("tests.helpers")
