"""Joining an existing Ray cluster (``xinet-compare --address``): the address and the token authentication are
checked with one cheap call first, so that a cluster that cannot be joined is one clear line, not Ray's long retries
ending in a traceback."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from xinet_rl.run.errors import UsageError

TOKEN_HELP = ("print the head's token with `ray get-auth-token` there and copy it to ~/.ray/auth_token here (or set "
              "RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file that holds it)")


def cluster_token() -> tuple[str | None, str]:
    """The token Ray's client presents to a cluster with token authentication, and where it comes from, in Ray's
    order: ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH`` names, ``~/.ray/auth_token``.

    :return: ``(token or None, its source)``
    """
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    try:
        return path.read_text().strip() or None, str(path)
    except OSError:
        return None, str(path)


def _ask_gcs(address: str, token: str | None) -> tuple[str, str]:
    """One cheap call (``GetClusterId``) to the GCS of a Ray cluster: (gRPC status name, details)."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId",
                                   request_serializer=lambda _: b"", response_deserializer=lambda data: data)
        try:
            call(None, timeout=10, metadata=[("authorization", f"Bearer {token}")] if token else None)
            return "OK", ""
        except grpc.RpcError as exc:
            return exc.code().name, " ".join(str(exc.details() or "").split())


def check_address(address: str) -> bool:
    """Check that ``HOST:PORT`` is the GCS of a Ray cluster this machine can join, before Ray tries (which retries
    for a long time and then ends in a traceback). Returns whether the cluster wants token authentication (this
    machine's token, which was checked, is then presented). A cluster that cannot be joined is a user error.

    :param address: ``HOST:PORT`` of the cluster's GCS
    :return: whether the cluster wants token authentication
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--address {address}: expected HOST:PORT (the GCS address `ray start --head` prints)")
    host = host or "127.0.0.1"
    target = f"{host}:{port}"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}") from None
    status, details = _ask_gcs(target, None)
    if status == "OK":
        return False
    if status != "UNAUTHENTICATED":
        raise UsageError(f"cannot join a Ray cluster at {address}: it does not answer as Ray's GCS (give the address "
                         f"`ray start --head` prints; {status}: {details})")
    token, source = cluster_token()
    if token is None:
        raise UsageError(f"cannot join the Ray cluster at {address}: it requires token authentication and this "
                         f"machine has no token (RAY_AUTH_TOKEN is unset and {source} is missing or empty): "
                         f"{TOKEN_HELP}")
    status, details = _ask_gcs(target, token)
    if status == "UNAUTHENTICATED":
        raise UsageError(f"cannot join the Ray cluster at {address}: it rejects the authentication token from "
                         f"{source}: {TOKEN_HELP}")
    if status != "OK":
        raise UsageError(f"cannot join the Ray cluster at {address}: {status}: {details}")
    return True


def join_cluster(address: str) -> None:
    """``ray.init`` on the existing cluster at ``address``, with token authentication where it wants it (Ray's
    client does not turn it on for an explicit address); failures are user errors in one line.

    :param address: ``HOST:PORT`` of the cluster's GCS
    """
    if check_address(address):
        os.environ["RAY_AUTH_MODE"] = "token"  # the token itself is found by Ray where cluster_token found it
        if "ray" in sys.modules:  # Ray reads its configuration once; have it read the mode again, as Ray does
            try:
                from ray._raylet import Config

                Config.initialize("")
            except (ImportError, AttributeError):
                pass
    import ray

    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"cannot join the Ray cluster at {address}: {reason}") from None
