"""The bad-input suite (issue 12): every bad input, fault and reused folder a user or
tester tried, each ending in one clear error (exit code non-zero, no traceback), an
explicit warning, or an ``unreliable`` result with its reason, never a silent number.

One file per area; each enumerates its cases with ``pytest.mark.parametrize`` ids that
name the case, so ``pytest tests/bad_inputs -q --co`` lists the suite."""
