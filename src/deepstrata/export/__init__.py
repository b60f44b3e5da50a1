"""``deepstrata export``: a run's model as a file another runtime executes, with the contract to feed it.

A family hands over an ``ExportPlan`` (``plan``): a small wrapper module that takes exactly
what the contract says, real batches to verify it on, and the contract's family part. The
rest is written once for every family: ``formats`` turns the wrapper into ONNX or pt2
bytes and opens them again, ``verify`` runs the same batches through both, ``files``
decides where everything goes and whether it may, and ``api`` puts them in that order —
nothing is written until the export has been verified.
"""
