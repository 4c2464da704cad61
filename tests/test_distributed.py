"""The pieces of hnd_jax.distributed that need no second process: option checks, the one-line
disagreement message, per-process fields left out of the comparison."""

from __future__ import annotations

import pytest

from hnd_jax.distributed import DistributedOptions, comparable, disagreement, first_difference, initialize
from hnd_jax.errors import HndError


@pytest.mark.parametrize("options, words", [
    (DistributedOptions(auto=True, coordinator="h:1", num_processes=2, process_id=0), "--distributed"),
    (DistributedOptions(coordinator="h:1"), "go together"),
    (DistributedOptions(coordinator="h:1", num_processes=2), "go together"),
    (DistributedOptions(coordinator="nohost", num_processes=2, process_id=0), "HOST:PORT"),
    (DistributedOptions(coordinator="h:99999", num_processes=2, process_id=0), "HOST:PORT"),
    (DistributedOptions(coordinator="h:1", num_processes=0, process_id=0), "--num-processes"),
    (DistributedOptions(coordinator="h:1", num_processes=2, process_id=2), "--process-id 2"),
    (DistributedOptions(coordinator="h:1", num_processes=2, process_id=-1), "--process-id -1"),
    (DistributedOptions(peer_timeout=0), "--peer-timeout"),
])
def test_bad_options_are_one_line_errors(options, words):
    with pytest.raises(HndError) as err:
        initialize(options)  # checked before anything joins
    assert words in str(err.value) and "\n" not in str(err.value)


def test_no_option_is_a_single_process():
    assert initialize(DistributedOptions()) is False


def test_disagreement_names_the_first_difference_and_both_values():
    a = {"scoring": {"quantile": 0.005, "seed": 0}, "model": {"weights": "abc"}}
    b = {"scoring": {"quantile": 0.1, "seed": 0}, "model": {"weights": "abc"}}
    assert first_difference(a, a) is None
    assert first_difference(a, b) == ("scoring.quantile", 0.005, 0.1)
    message = disagreement([a, a, b])
    assert "scoring.quantile: 0.005 on process 0, 0.1 on process 2" in message and "\n" not in message
    assert disagreement([a, dict(a)]) is None
    assert "layers: <absent> on process 0" in disagreement([{}, {"layers": ["x"]}])


def test_per_process_fields_are_not_compared():
    fp0 = {"process": [0, 2], "scoring": {"quantile": 0.005}}
    fp1 = {"process": [1, 2], "scoring": {"quantile": 0.005}}
    assert disagreement([comparable(fp0), comparable(fp1)]) is None
    assert disagreement([fp0, fp1]) is not None


def test_a_port_in_use_is_seen_and_a_free_one_is_not():
    """Process 0 refuses a taken port up front (JAX's coordinator crashed with a segmentation fault
    when its gRPC server could not bind), for listeners on any address family."""
    import socket

    from hnd_jax.distributed import port_in_use

    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::1")):
        try:
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.bind((address, 0))
        except OSError:  # no IPv6 on this machine
            continue
        with listener:
            listener.listen()
            port = listener.getsockname()[1]
            assert port_in_use(port), (address, port)
        assert not port_in_use(port), (address, port)  # closed: free again


def test_the_coordinator_is_checked_before_jax_is_asked():
    import socket

    from hnd_jax.distributed import _check_coordinator

    with pytest.raises(HndError, match="cannot resolve the host 'no-such-host.invalid'"):
        _check_coordinator(DistributedOptions(coordinator="no-such-host.invalid:1234", num_processes=2, process_id=1))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        busy = DistributedOptions(coordinator=f"127.0.0.1:{port}", num_processes=2, process_id=0)
        with pytest.raises(HndError, match=f"port {port} is already in use"):
            _check_coordinator(busy)
        # only process 0 binds the port: the others connect to it
        _check_coordinator(DistributedOptions(coordinator=f"127.0.0.1:{port}", num_processes=2, process_id=1))


def test_processes_wait_for_each_other_at_least_a_minute_at_the_start():
    from hnd_jax.distributed import JOIN_TIMEOUT_FLOOR, join_timeout_for

    assert join_timeout_for(4.0) == JOIN_TIMEOUT_FLOOR == 60
    assert join_timeout_for(120.0) == 120 and join_timeout_for(120.2) == 121
