from __future__ import annotations

import pytest

from services.gateway.domain.webhooks import check_endpoint_url


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.5/hook",
        "https://10.1/hook",  # shorthand for 10.0.0.1
        "https://169.254.43518/latest/meta-data",  # shorthand for 169.254.169.254
        "https://0x0a000001/hook",  # 10.0.0.1 in hex
        "https://100.64.0.1/hook",  # shared address space (carrier-grade NAT, cloud metadata)
        "https://[fd00::1]/hook",
        "https://169.254.169.254./latest/meta-data",  # a trailing dot names the same address
        "https://10.1./hook",
        "https://[64:ff9b::a9fe:a9fe]/",  # NAT64 to 169.254.169.254
        "https://[2002:a00:1::]/",  # 6to4 carrying 10.0.0.1
        "https://[::ffff:192.168.0.1]/",  # IPv4-mapped
    ],
)
def test_internal_addresses_are_refused(url):
    with pytest.raises(ValueError, match="private"):
        check_endpoint_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/taskroute",
        "https://93.184.216.34/hook",
        "http://127.0.0.1:9/x",
        "https://[64:ff9b::5db8:d822]/hook",  # NAT64 to 93.184.216.34: public
    ],
)
def test_public_and_loopback_addresses_pass(url):
    assert check_endpoint_url(url) == url
