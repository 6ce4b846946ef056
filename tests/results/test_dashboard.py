"""results/dashboard.py in process: which hosts are loopback and the address the dashboard prints (the dashboard
as a server on a real study: tests/system/test_dashboard.py)."""

from __future__ import annotations

from maskcls_hpo.results.dashboard import dashboard_address, is_loopback


def test_loopback_and_address():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert dashboard_address("127.0.0.1", 8080) == "http://127.0.0.1:8080/dashboard"
    assert dashboard_address("0.0.0.0", 9000) == "http://127.0.0.1:9000/dashboard"
    assert dashboard_address("::1", 8080) == "http://[::1]:8080/dashboard"
