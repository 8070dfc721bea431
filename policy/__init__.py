"""The CrossGuard policy pack (see README.md); a package so the tests import `policy.rules`."""
