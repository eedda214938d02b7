"""Confidence of the selected draft: its signals (``features``), the calibrated model over them (``model``), the
pool set and the fit that produce the model (``pool``, ``fit``) and the ``specrag confidence`` commands (``cli``)."""
