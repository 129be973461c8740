"""FakeTabPFN's parts, one module each: what changes together stays together.

``common`` (errors and JSON helpers), ``ledger`` (accounts and credits), ``faults`` (injected
failures), ``storage`` (signed-URL uploads and downloads), ``fits`` (the fit state machine),
``prediction`` (predictions and their metadata). ``tabpfn_gateway.testing.fake`` routes
requests to them; its public names are the only API.
"""
