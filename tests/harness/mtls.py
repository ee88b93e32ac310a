"""A mesh for workload-identity tests: a CA, workload certificates whose one URI SAN is a SPIFFE
ID, and the shipped Envoy config made to require client certificates, either on keygate's own
listener (a gateway that terminates mTLS) or on a second listener in front of it (a sidecar that
terminates mTLS and passes the identity on in x-forwarded-client-cert)."""

from __future__ import annotations

import copy
import ssl
from pathlib import Path
from typing import Any

from .ports import HOST
from .tls import Authority, Pem

TRUST_DOMAIN = "cluster.local"
TLS_SOCKET = "envoy.transport_sockets.tls"
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
SIDECAR_CLUSTER = "keygate_listener"


def spiffe_id(namespace: str, service_account: str) -> str:
    """The SPIFFE ID Istio gives a workload: spiffe://cluster.local/ns/NS/sa/SA."""
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


class Mesh:
    """The mesh CA in `directory`, the gateway's server certificate, and workload certificates."""

    def __init__(self, directory: Path) -> None:
        self.ca = Authority(directory, "mesh-ca")
        self.gateway = self.ca.issue("gateway", ["localhost"], [HOST])

    def workload(self, namespace: str, service_account: str) -> Pem:
        """A client certificate for the workload running as `service_account` in `namespace`."""
        return self.ca.issue(f"{namespace}.{service_account}", [], [], client=True,
                             uris=[spiffe_id(namespace, service_account)])

    def client_context(self, workload: Pem | None) -> ssl.SSLContext:
        """A client TLS context trusting the mesh CA, presenting `workload`'s certificate."""
        context = ssl.create_default_context(cafile=str(self.ca.pem.cert))
        if workload is not None:
            context.load_cert_chain(str(workload.cert), str(workload.key))
        return context

    def tls_socket(self) -> dict[str, Any]:
        """A listener's TLS: the gateway certificate; a client certificate from the mesh CA required."""
        return {
            "name": TLS_SOCKET,
            "typed_config": {
                "@type": DOWNSTREAM_TLS,
                "require_client_certificate": True,
                "common_tls_context": {
                    "tls_certificates": [{
                        "certificate_chain": {"filename": str(self.gateway.cert)},
                        "private_key": {"filename": str(self.gateway.key)},
                    }],
                    "validation_context": {"trusted_ca": {"filename": str(self.ca.pem.cert)}},
                },
            },
        }


def _listener(config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = config["static_resources"]["listeners"]
    return listener


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    (chain,) = _listener(config)["filter_chains"]
    (hcm,) = chain["filters"]
    return hcm["typed_config"]


def terminate_mtls(config: dict[str, Any], mesh: Mesh) -> dict[str, Any]:
    """keygate's listener terminates mTLS itself (a gateway): a new config whose only change is
    the listener's TLS, requiring a client certificate from the mesh CA."""
    config = copy.deepcopy(config)
    (chain,) = _listener(config)["filter_chains"]
    chain["transport_socket"] = mesh.tls_socket()
    return config


def behind_sidecar(config: dict[str, Any], mesh: Mesh, sidecar_port: int) -> dict[str, Any]:
    """A second listener on `sidecar_port` in front of keygate's (plain) listener, configured as
    Istio configures a sidecar's inbound side: it terminates mTLS and appends the client
    certificate's URI to x-forwarded-client-cert (APPEND_FORWARD). keygate's listener keeps that
    header on its plaintext hop (ALWAYS_FORWARD_ONLY), as docs/envoy.md tells operators to."""
    config = copy.deepcopy(config)
    listener = _listener(config)
    _hcm(config)["forward_client_cert_details"] = "ALWAYS_FORWARD_ONLY"
    target = listener["address"]["socket_address"]
    sidecar = {
        "name": "sidecar_inbound",
        "address": {"socket_address": {"address": HOST, "port_value": sidecar_port}},
        "filter_chains": [{
            "transport_socket": mesh.tls_socket(),
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": HCM,
                    "stat_prefix": "sidecar_inbound",
                    "forward_client_cert_details": "APPEND_FORWARD",
                    "set_current_client_cert_details": {"uri": True, "subject": True, "dns": True},
                    "route_config": {"virtual_hosts": [{
                        "name": "app", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": SIDECAR_CLUSTER, "timeout": "0s"}}],
                    }]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
                },
            }],
        }],
    }
    config["static_resources"]["listeners"].append(sidecar)
    config["static_resources"]["clusters"].append({
        "name": SIDECAR_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "load_assignment": {"cluster_name": SIDECAR_CLUSTER, "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": {"socket_address": dict(target)}}}]}]},
    })
    return config
