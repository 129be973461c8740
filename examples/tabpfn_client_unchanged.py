"""Existing tabpfn-client code, unchanged, through the gateway: only two environment variables.

    TABPFN_CLIENT_API_URL=https://tabpfn-gateway.example.com   # the gateway, not TabPFN
    TABPFN_TOKEN=tpg_...                                        # a gateway key, not a TabPFN token

This example runs offline: it starts a gateway server on a loopback port (needs
``pip install 'tabpfn-gateway[server,client]'``) whose upstream is an in-process FakeTabPFN, makes a
gateway key, and runs ``EXISTING_CODE`` - plain tabpfn-client code - in a fresh Python process
with those two variables set. The upstream only ever sees the team's TabPFN token; the gateway
records the usage under the key.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from tabpfn_gateway.testing import local_gateway
from tabpfn_gateway.testing.fake_server import serve_in_thread

# Your code, as it is today: nothing here knows about the gateway.
EXISTING_CODE = """
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from tabpfn_client import TabPFNClassifier

X, y = load_breast_cancer(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
clf = TabPFNClassifier(n_estimators=2)
clf.fit(X_train, y_train)
print(f"tabpfn-client accuracy through the gateway: {clf.score(X_test, y_test):.3f}")
"""


def main() -> None:
    from tabpfn_gateway_server.app import create_app

    with local_gateway() as local:
        app = create_app(local.gateway.settings, gateway=local.gateway)
        with serve_in_thread(app) as url, tempfile.TemporaryDirectory() as home:
            print(f"gateway listening on {url}")
            env = {
                **os.environ,
                "TABPFN_CLIENT_API_URL": url,
                "TABPFN_TOKEN": local.api_key.get_secret_value(),
                # tabpfn-client caches tokens under HOME; keep the user's untouched.
                "HOME": home,
            }
            subprocess.run([sys.executable, "-c", EXISTING_CODE], env=env, check=True)
        upstream_tokens = {r.token for r in local.fake.requests if r.method == "POST"}
        print(f"tokens the upstream saw: {len(upstream_tokens)} (the team's TabPFN token only)")
        for summary in local.usage():
            print(f"usage under the key: {summary.operation} x{summary.calls}")


if __name__ == "__main__":
    main()
