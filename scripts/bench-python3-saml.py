"""python3-saml validating the same signed Responses as scripts/bench-workerd.mjs, for the
comparison in BENCHMARKS.md. Not installed by scripts/setup.sh; run it in a throwaway venv:

    python3 -m venv /tmp/py-saml && /tmp/py-saml/bin/pip install python3-saml
    /tmp/py-saml/bin/python scripts/bench-python3-saml.py

Per Response: median over 5 rounds of N validations (OneLogin_Saml2_Response.is_valid, strict,
signed assertion required), in microseconds.
"""

import base64
import os
import statistics
import sys
import time

from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "saml")
N = int(os.environ.get("BENCH_N", "200"))


def settings(cert):
    return OneLogin_Saml2_Settings(
        {
            "strict": True,
            "sp": {
                "entityId": "https://sp.example.com/saml/metadata",
                "assertionConsumerService": {"url": "https://sp.example.com/saml/acs"},
            },
            "idp": {
                "entityId": "https://idp.example.com/metadata",
                "singleSignOnService": {"url": "https://idp.example.com/sso"},
                "x509cert": cert,
            },
            "security": {"wantAssertionsSigned": True, "wantMessagesSigned": False, "rejectDeprecatedAlgorithm": True},
        },
        sp_validation_only=True,
    )


def main():
    with open(os.path.join(ROOT, "keys", "idp-rsa.crt"), encoding="utf-8") as f:
        cert = f.read()
    s = settings(cert)
    request_data = {"https": "on", "http_host": "sp.example.com", "script_name": "/saml/acs", "server_port": "443"}
    for name, size in (("bench-4k.xml", "4 KB"), ("bench-8k.xml", "8 KB"), ("bench-40k.xml", "40 KB")):
        with open(os.path.join(ROOT, "signed", name), "rb") as f:
            encoded = base64.b64encode(f.read()).decode()

        def validate():
            r = OneLogin_Saml2_Response(s, encoded)
            if not r.is_valid(request_data, request_id="_req-6c1e8f4a", raise_exceptions=True):
                raise SystemExit(f"python3-saml refused {name}: {r.get_error()}")

        validate()
        rounds = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(N):
                validate()
            rounds.append((time.perf_counter() - t0) * 1e6 / N)
        label = f"python3-saml (Python {sys.version.split()[0]}): same Response, {size}"
        print(f"{label:<64} {statistics.median(rounds):10.1f} µs/op")


if __name__ == "__main__":
    main()
