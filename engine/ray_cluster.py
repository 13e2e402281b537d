"""Ray clusters: joining one (checked in bounded time) or starting a local one, and sizing the
actor pool against what the cluster has. Nothing here extracts: :mod:`.ray_engine` runs the
extraction unit on the cluster this module joined.

Ray is optional (``pip install 'ray[data]'``); it is imported only when a function here runs.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

from ..errors import ClusterError, DependencyError, one_line

log = logging.getLogger(__name__)


class RayUnavailableError(DependencyError):
    """Ray is not installed."""


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailableError("--engine ray needs Ray Data: pip install 'ray[data]'") from None
    return ray


def init_ray(address: str | None, *, num_cpus: int | None = None, verbose: bool = False, check: bool = True) -> bool:
    """Join ``address``, or start a local instance bound to 127.0.0.1. Returns True if started here
    (the caller shuts it down).

    A join is checked first, in bounded time (:func:`check_cluster_address`): ``ray.init`` itself
    retries an address where no GCS answers for minutes. The check runs even when this process is
    already connected (which is then kept), so a bad address is never silently ignored. ``check``
    False: the caller has just checked it.
    """
    ray = import_ray()
    quiet = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR,
             "configure_logging": True}
    _quiet_ray(verbose)
    if address and check:
        check_cluster_address(address, verbose=verbose)
    if ray.is_initialized():
        return False
    if address:
        try:
            with _fd2_silenced(not verbose):  # Ray's C++ core logs "Set ray log level ..." straight to fd 2
                ray.init(address=address, **quiet)
        except ValueError as e:
            if "ray[client]" in str(e):
                raise RayUnavailableError(f"--ray-address {address} uses Ray Client, which needs its extra: pip "
                                          "install 'ray[client]' (or pass the head's HOST:PORT)") from None
            raise
        return False
    with _fd2_silenced(not verbose):
        # address="local": a fresh instance of our own, even when another Ray instance runs on this
        # machine (Ray would join the newest one, and refuse num_cpus there)
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 _node_ip_address="127.0.0.1", **quiet)
    return True


def _quiet_ray(verbose: bool) -> None:
    """Unless ``verbose``: Ray's C++ core and Ray Data log warnings to stderr by default (e.g. that
    8.8.8.8 is unreachable in a loopback-only namespace); one progress line is enough."""
    if not verbose:
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.CRITICAL)  # failures reach the CLI as one line


_PROBE_S = 5.0  # per connect / per RPC; three at most, so a join fails within ~15 s


def check_cluster_address(address: str, *, timeout_s: float = _PROBE_S, verbose: bool = False) -> str:
    """Raise :class:`ClusterError` unless a Ray GCS answers where ``ray.init(address)`` will connect.

    Returns the ``host:port`` Ray will use. ``ray.init`` rewrites a loopback host (127.0.0.1,
    localhost) to this machine's own address (Ray's ``resolve_ip_for_localhost``): a head started
    with ``--node-ip-address 127.0.0.1`` listens only on loopback, so the join would retry for
    minutes; that case gets its own message. ``ray://`` (Ray Client) addresses get a TCP check only.
    """
    _quiet_ray(verbose)
    if address.startswith("ray://"):
        host, port = _split_host_port(address[len("ray://"):], address)
        _tcp_probe(host, port, address, timeout_s)
        return f"{host}:{port}"
    with _fd2_silenced(not verbose):  # Ray's C++ core warns straight to fd 2 when 8.8.8.8 is unreachable
        target = _bootstrap_address(address)
    host, port = _split_host_port(target, address)
    given_host, _ = _split_host_port(address, address) if address != "auto" else (host, port)
    if not _tcp_answers(host, port, timeout_s):
        if given_host != host and _tcp_answers(given_host, port, timeout_s):
            raise ClusterError(
                f"Ray joins {address} at {host}:{port} (it rewrites loopback addresses to this machine's "
                f"address) and nothing answers there; start the head with `ray start --head "
                f"--node-ip-address {host}`, or run head, nodes and driver in one loopback-only network "
                "namespace (README: Scaling out)")
        raise ClusterError(f"no Ray cluster answers at {address} (nothing listens on {host}:{port}); start one "
                           f"with `ray start --head --port {port}`, or pass the address `ray start --head` printed")
    _gcs_probe(host, port, address, timeout_s)
    return f"{host}:{port}"


@contextmanager
def _fd2_silenced(on: bool):
    """File descriptor 2 to /dev/null while ``on`` (C++ logging bypasses Python's sys.stderr)."""
    if not on:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _bootstrap_address(address: str) -> str:
    """``host:port`` that ``ray.init(address=address)`` connects to (``auto`` resolved, loopback
    rewritten), from Ray's own function."""
    from ray._private import services

    try:
        target = services.canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as e:
        raise ClusterError(f"--ray-address {address}: {one_line(e)}; pass HOST:PORT of a running head "
                           "(`ray start --head` prints it)") from None
    if target is None:
        raise ClusterError(f"--ray-address {address} names no running cluster; pass HOST:PORT of a running "
                           "head (`ray start --head` prints it)")
    return target


def _split_host_port(hostport: str, address: str) -> tuple[str, int]:
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ClusterError(f"--ray-address {address} is not HOST:PORT (e.g. 10.0.0.5:6379, ray://head:10001, "
                           "or auto)")
    if not 0 < int(port) < 65536:
        raise ClusterError(f"--ray-address {address}: port {port} is not a TCP port (1..65535)")
    return host.strip("[]"), int(port)


def _tcp_answers(host: str, port: int, timeout_s: float) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _tcp_probe(host: str, port: int, address: str, timeout_s: float) -> None:
    if not _tcp_answers(host, port, timeout_s):
        raise ClusterError(f"nothing answers at {address} within {timeout_s:g} s; check the head's address "
                           "and port (Ray Client listens on 10001 by default)")


_GCS_PROBE = """
import sys
try:  # Ray >= 2.5x: a driver sends ~/.ray/auth_token when one exists, as ray.init does
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available)
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
except ImportError:
    pass
from ray._raylet import GcsClient
GcsClient(address=sys.argv[1])
print("gcs", flush=True)
"""


def _gcs_probe(host: str, port: int, address: str, timeout_s: float) -> None:
    """Something listens at ``host:port``; is it a GCS that lets us in? Ray's own client, in a child
    process (it exits the process when no GCS answers) with short connect timeouts and a hard limit."""
    import subprocess

    env = {**os.environ, "RAY_gcs_rpc_server_connect_timeout_s": str(int(timeout_s)),
           "RAY_gcs_rpc_server_reconnect_timeout_s": str(int(timeout_s)), "RAY_BACKEND_LOG_LEVEL": "warning"}
    try:
        done = subprocess.run([sys.executable, "-c", _GCS_PROBE, f"{host}:{port}"], env=env, capture_output=True,
                              text=True, timeout=3 * timeout_s)
        out, err = done.stdout, done.stderr
    except subprocess.TimeoutExpired as e:
        out, err = _text(e.stdout), _text(e.stderr)
    if "gcs" in out:
        return
    if "Unauthenticated" in err or "AuthenticationError" in err:
        raise ClusterError(f"the Ray cluster at {address} wants an authentication token this machine does not "
                           "have; copy the head's ~/.ray/auth_token here (or set RAY_AUTH_TOKEN), or start every "
                           "node with the same RAY_AUTH_MODE")
    raise ClusterError(f"{host}:{port} answers but no Ray GCS replied within {3 * timeout_s:g} s; pass the "
                       f"address `ray start --head` printed (default port 6379), not {address}")


def _text(b) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


ACTOR_START_LIMIT_S = 600  # a cold node may need minutes to start a worker and load a large model


MIN_ACTOR_CPUS = 0.25


def actor_cpus(total_cpus: float, actors: int) -> float:
    """CPUs each model actor reserves: at most half the cluster's CPUs go to actors, so decode
    tasks always get some (actors holding every CPU deadlock a 2-core machine)."""
    return max(MIN_ACTOR_CPUS, min(1.0, total_cpus / 2 / max(1, actors)))


def actor_shortfall(actors: int, total_cpus: float) -> str | None:
    """Why ``actors`` model actors do not fit ``total_cpus``, or None. Each actor reserves at least
    :data:`MIN_ACTOR_CPUS` and actors get at most half the CPUs (:func:`actor_cpus`): more actors
    than that would leave the decode tasks no CPU, and the job would wait forever."""
    most = int(total_cpus / 2 / MIN_ACTOR_CPUS)
    if actors <= most:
        return None
    return (f"--actors {actors} is more than the Ray cluster's {total_cpus:g} CPU(s) can host next to the decode "
            f"tasks (at most {most}: each actor reserves 0.25 CPU or more, actors get at most half the CPUs); "
            f"pass --actors {max(most, 1)} or fewer, or add nodes")


def gpu_shortfall(actors: int, gpus_per_actor: float, cluster_gpus: float) -> str | None:
    """What is missing for ``actors`` x ``gpus_per_actor`` GPUs on a cluster with ``cluster_gpus``,
    or None when they fit."""
    need = actors * gpus_per_actor
    if need <= cluster_gpus:
        return None
    return (f"{actors} actor(s) x {gpus_per_actor:g} GPU need {need:g} GPU(s) and the Ray cluster has "
            f"{cluster_gpus:g}")
