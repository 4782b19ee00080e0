"""End-to-end tests: the real gateway in a subprocess, real SDKs, a fake upstream."""
